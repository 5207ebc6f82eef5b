// Compiles lwkt/token.h alone: public headers must be self-contained.
#include "lwkt/token.h"  // IWYU pragma: keep
