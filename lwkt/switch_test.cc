// The assembly context switch on its own: control transfer and the value handed across,
// callee-saved state (including the floating-point control state), stack alignment.
#include <gtest/gtest.h>

#include <cfenv>
#include <cstdint>
#include <string>
#include <vector>

#include "lwkt/internal/context.h"

namespace lwkt::internal {
namespace {

// Bare contexts with their own stacks, driven by lwkt_cpu_switch directly (no runtime).
struct ctx {
  void* sp = nullptr;
};

ctx g_main, g_other;
std::string g_trace;
void* g_received = nullptr;
std::uintptr_t g_align = 1;
int g_round_other = -1;

// Runs on the other stack. Entered through `enter_other`, below.
[[noreturn]] void other_body() {
  alignas(16) char probe[16];
  g_align = reinterpret_cast<std::uintptr_t>(probe) % 16;
  for (int i = 0; i < 3; ++i) {
    g_trace += 'B';
    g_received = lwkt_cpu_switch(&g_other.sp, g_main.sp, &g_other);
  }
  // The FP rounding mode set on the main stack must not be visible here.
  g_round_other = std::fegetround();
  lwkt_cpu_switch(&g_other.sp, g_main.sp, &g_other);
  __builtin_trap();
}

char* aligned_top(std::vector<char>& stack) {
  return reinterpret_cast<char*>(
      reinterpret_cast<std::uintptr_t>(stack.data() + stack.size()) & ~std::uintptr_t{15});
}

TEST(Switch, PingPongTransfersControlAndValue) {
  std::vector<char> stack(64 * 1024);
  g_other.sp = make_bare_frame(aligned_top(stack), other_body);
  g_trace.clear();
  for (int i = 0; i < 3; ++i) {
    g_trace += 'A';
    void* got = lwkt_cpu_switch(&g_main.sp, g_other.sp, &g_main);
    EXPECT_EQ(got, &g_other);
    EXPECT_EQ(g_received, i == 0 ? nullptr : &g_main);
  }
  EXPECT_EQ(g_trace, "ABABAB");
  EXPECT_EQ(g_align, 0u) << "16-byte stack alignment at a context's first function";

  // Callee-saved FP control: change the rounding mode here, check the other side kept its
  // own (round-to-nearest), then check ours is intact when we come back.
  ASSERT_EQ(std::fesetround(FE_UPWARD), 0);
  lwkt_cpu_switch(&g_main.sp, g_other.sp, &g_main);
  EXPECT_EQ(g_round_other, FE_TONEAREST);
  EXPECT_EQ(std::fegetround(), FE_UPWARD);
  std::fesetround(FE_TONEAREST);
}

#if defined(__x86_64__)
// MXCSR is restored one of two ways, chosen from the CPU vendor at start-up
// (switch_x86_64_sysv_elf.S): reloaded only when its control bits differ, or reloaded on
// every switch. Both run here whatever the host. Each control bit must travel with its
// thread, the two at the mask's ends (DAZ, bit 6; FZ, bit 15) and the rounding field
// between, while the status flags (bits 5:0, not preserved by the ABI) may go either way.
std::uint32_t g_mxcsr_other = 0;

[[noreturn]] void mxcsr_body() {
  for (;;) {
    g_mxcsr_other = __builtin_ia32_stmxcsr();
    lwkt_cpu_switch(&g_other.sp, g_main.sp, nullptr);
  }
}

// Param: the value of lwkt_switch_mxcsr_always for the test (0: compare, 1: always).
class SwitchMxcsr : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { lwkt_switch_mxcsr_always = static_cast<unsigned char>(GetParam()); }
  void TearDown() override { lwkt_switch_mxcsr_always = _host; }

 private:
  const unsigned char _host = lwkt_switch_mxcsr_always;
};
INSTANTIATE_TEST_SUITE_P(ReloadMode, SwitchMxcsr, ::testing::Values(0, 1));

TEST_P(SwitchMxcsr, EachMxcsrControlBitTravelsWithItsThread) {
  std::vector<char> stack(64 * 1024);
  g_other.sp = make_bare_frame(aligned_top(stack), mxcsr_body);
  const std::uint32_t saved = __builtin_ia32_stmxcsr();
  constexpr std::uint32_t kStatus = 0x3f;
  for (std::uint32_t bit : {0x0040u /* DAZ */, 0x8000u /* FZ */, 0x6000u /* RC: toward 0 */,
                            0x0080u /* IM cleared below */}) {
    // Ours: the defaults with `bit` flipped; theirs: the defaults (0x1f80).
    const std::uint32_t mine = (0x1f80u ^ bit);
    __builtin_ia32_ldmxcsr(mine);
    lwkt_cpu_switch(&g_main.sp, g_other.sp, nullptr);
    EXPECT_EQ(g_mxcsr_other & ~kStatus, 0x1f80u) << std::hex << "bit 0x" << bit << " leaked";
    EXPECT_EQ(__builtin_ia32_stmxcsr() & ~kStatus, mine) << std::hex << "bit 0x" << bit << " lost";
  }
  __builtin_ia32_ldmxcsr(saved);
}
#endif

// Values live in callee-saved registers across a switch survive it: a loop keeps several
// accumulators in registers while switching every iteration.
TEST(Switch, CalleeSavedRegistersSurvive) {
  std::vector<char> stack(64 * 1024);
  static ctx a, b;
  static std::uint64_t b_sum;
  struct body {
    [[noreturn]] static void run() {
      std::uint64_t x = 1, y = 2, z = 3, w = 4;
      for (;;) {
        x = x * 3 + y;
        y ^= z + w;
        z += x;
        w = w * 5 + 1;
        b_sum = x + y + z + w;
        lwkt_cpu_switch(&b.sp, a.sp, nullptr);
      }
    }
  };
  b.sp = make_bare_frame(aligned_top(stack), body::run);
  std::uint64_t x = 1, y = 2, z = 3, w = 4, mine = 0;
  for (int i = 0; i < 1000; ++i) {
    x = x * 3 + y;
    y ^= z + w;
    z += x;
    w = w * 5 + 1;
    lwkt_cpu_switch(&a.sp, b.sp, nullptr);
    mine = x + y + z + w;
    ASSERT_EQ(mine, b_sum) << "iteration " << i;
  }
}

}  // namespace
}  // namespace lwkt::internal
