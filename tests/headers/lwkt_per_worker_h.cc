// Compiles lwkt/per_worker.h alone: public headers must be self-contained.
#include "lwkt/per_worker.h"  // IWYU pragma: keep
