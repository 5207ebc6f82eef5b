// Built against @lwkt_system//:gmock_main (no -lgmock in the embedder's BUILD).
#include "echo.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::SizeIs;

TEST(Embed, EchoComesBackWhole) {
  auto rt = lwkt::Runtime::create({.workers = 2});
  ASSERT_TRUE(rt.ok()) << rt.status();
  const std::string text(100000, 'x');  // more than one socket buffer's worth at a time
  auto got = embed::echo_once(**rt, text + "end");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(*got, AllOf(SizeIs(text.size() + 3), HasSubstr("xend")));
  EXPECT_TRUE((*rt)->shutdown().ok());
}

}  // namespace
