// Compiles lwkt/thread.h alone: public headers must be self-contained.
#include "lwkt/thread.h"  // IWYU pragma: keep
