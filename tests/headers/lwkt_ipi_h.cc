// Compiles lwkt/ipi.h alone: public headers must be self-contained.
#include "lwkt/ipi.h"  // IWYU pragma: keep
