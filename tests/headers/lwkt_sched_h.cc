// Compiles lwkt/sched.h alone: public headers must be self-contained.
#include "lwkt/sched.h"  // IWYU pragma: keep
