// The x86-64 switch's one start-up choice: how it restores MXCSR (see
// switch_x86_64_sysv_elf.S and docs/design.md "The raw switch").
#include "lwkt/internal/context.h"

#if defined(__x86_64__)
#include <cpuid.h>

#include <cstring>

namespace {

// True on AMD and Hygon (Zen) CPUs: there, reading back the MXCSR value just stored by
// STMXCSR stalls and LDMXCSR is cheap, so the switch reloads MXCSR without comparing.
// Everywhere else (Intel measured) LDMXCSR of a changed value is the slow part, so the
// switch compares the control bits first.
unsigned char reload_mxcsr_always() {
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return 0;
  char vendor[12];
  std::memcpy(vendor + 0, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  return std::memcmp(vendor, "AuthenticAMD", 12) == 0 || std::memcmp(vendor, "HygonGenuine", 12) == 0;
}

}  // namespace

// Written once, before main (static initialisation: no context is switched before then);
// read by every switch. A benchmark may flip it between runs (BM_Switch_Raw_Mxcsr*).
unsigned char lwkt_switch_mxcsr_always = reload_mxcsr_always();  // declared in context.h
#endif
