// Compiles lwkt/sleep.h alone: public headers must be self-contained.
#include "lwkt/sleep.h"  // IWYU pragma: keep
