// Compiles lwkt/snapshot.h alone: public headers must be self-contained.
#include "lwkt/snapshot.h"  // IWYU pragma: keep
