// Compiles lwkt/runtime.h alone: public headers must be self-contained.
#include "lwkt/runtime.h"  // IWYU pragma: keep
