// Compiles tokens/token.h alone: public headers must be self-contained.
#include "tokens/token.h"  // IWYU pragma: keep
