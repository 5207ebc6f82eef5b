// Compiles ipiq/inbox.h alone: public headers must be self-contained.
#include "ipiq/inbox.h"  // IWYU pragma: keep
