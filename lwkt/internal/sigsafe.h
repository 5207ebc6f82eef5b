// sigsafe.h: building a line of text in a signal handler (no allocation, no locale, no
// stdio), for the runtime's messages that must be printed from signal context: the stack
// overflow report (stack.cc) and the stall detector's backtrace (monitor.cc).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>

namespace lwkt::internal {

// A fixed buffer; text past its end is dropped (the line is cut, never overrun).
class sigsafe_line {
 public:
  sigsafe_line& str(const char* s) {
    while (s && *s && _n + 1 < sizeof _buf) _buf[_n++] = *s++;
    return *this;
  }
  sigsafe_line& num(std::uint64_t v) { return digits(v, 10); }
  sigsafe_line& hex(std::uint64_t v) { return str("0x").digits(v, 16); }
  // Writes the line to fd (one write(2): lines from several workers do not interleave).
  void write_to(int fd) const { (void)!::write(fd, _buf, _n); }

 private:
  sigsafe_line& digits(std::uint64_t v, unsigned base) {
    char tmp[24];
    int k = 0;
    do {
      tmp[k++] = "0123456789abcdef"[v % base];
      v /= base;
    } while (v);
    while (k && _n + 1 < sizeof _buf) _buf[_n++] = tmp[--k];
    return *this;
  }
  char _buf[512];
  std::size_t _n = 0;
};

}  // namespace lwkt::internal
