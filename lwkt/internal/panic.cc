#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

#include "lwkt/internal/assert.h"
#include "lwkt/internal/globaldata.h"

namespace lwkt::internal {

void panic(const thread* td, const char* fmt, ...) {
  char buf[512];
  int n;
  globaldata* gd = mycpu();
  if (td) {
    const globaldata* owner = td->td_gd;  // one read: null while in transit
    n = std::snprintf(buf, sizeof buf, "lwkt: td \"%s\" on worker %d: ", td->td_comm,
                      owner ? owner->gd_cpuid : -1);
  } else if (gd) {
    n = std::snprintf(buf, sizeof buf, "lwkt: worker %d: ", gd->gd_cpuid);
  } else {
    n = std::snprintf(buf, sizeof buf, "lwkt: ");
  }
  if (n < 0) n = 0;
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(buf + n, sizeof buf - static_cast<std::size_t>(n) - 1, fmt, ap);
  va_end(ap);
  std::size_t len = static_cast<std::size_t>(n) + (m > 0 ? static_cast<std::size_t>(m) : 0);
  if (len > sizeof buf - 2) len = sizeof buf - 2;
  buf[len++] = '\n';
  (void)!write(2, buf, len);
  std::abort();
}

}  // namespace lwkt::internal
