// Each file under tests/headers includes one public header and nothing else; this test
// exists so that they are compiled (a header that is not self-contained fails the build).
#include <gtest/gtest.h>

TEST(Headers, EachPublicHeaderCompilesAlone) { SUCCEED(); }
