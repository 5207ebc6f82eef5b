// Compiles lwkt/cpumask.h alone: public headers must be self-contained.
#include "lwkt/cpumask.h"  // IWYU pragma: keep
