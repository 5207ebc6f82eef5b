// Compiles ipiq/ring.h alone: public headers must be self-contained.
#include "ipiq/ring.h"  // IWYU pragma: keep
