// Compiles msgport/msgport.h alone: public headers must be self-contained.
#include "msgport/msgport.h"  // IWYU pragma: keep
