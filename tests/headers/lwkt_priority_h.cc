// Compiles lwkt/priority.h alone: public headers must be self-contained.
#include "lwkt/priority.h"  // IWYU pragma: keep
