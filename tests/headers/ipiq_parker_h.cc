// Compiles ipiq/parker.h alone: public headers must be self-contained.
#include "ipiq/parker.h"  // IWYU pragma: keep
