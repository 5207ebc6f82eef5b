#include "echo.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "io/io.h"
#include "lwkt/thread.h"

namespace embed {

absl::StatusOr<std::string> echo_once(lwkt::Runtime& rt, std::string_view text) {
  const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (lfd < 0 || bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(lfd, 1) != 0 || getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int e = errno;
    if (lfd >= 0) ::close(lfd);
    return absl::InternalError(absl::StrCat("loopback listen: ", std::strerror(e)));
  }
  auto server = rt.spawn([lfd] {  // accept one connection and echo it until end of file
    lwkt::io::result c = lwkt::io::accept(lfd, nullptr, nullptr);
    if (!c.ok()) return;
    const int fd = static_cast<int>(c.value());
    char buf[4096];
    for (lwkt::io::result n; (n = lwkt::io::recv(fd, buf, sizeof buf)).value() > 0;) {
      if (!lwkt::io::send_all(fd, buf, n.value()).ok()) break;
    }
    (void)lwkt::io::close(fd);
  }, {.name = "echo-server"});
  std::string got;
  lwkt::io::result outcome;
  auto client = rt.spawn([&] {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    outcome = lwkt::io::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    if (outcome.ok()) outcome = lwkt::io::send_all(fd, text.data(), text.size());
    if (outcome.ok()) {
      got.resize(text.size());
      outcome = lwkt::io::recv_all(fd, got.data(), got.size());
      if (outcome.ok()) got.resize(outcome.value());
    }
    (void)lwkt::io::close(fd);
  }, {.name = "echo-client"});
  if (!server.ok() || !client.ok()) {
    ::close(lfd);
    return server.ok() ? client.status() : server.status();
  }
  client->join();
  server->join();
  ::close(lfd);
  if (!outcome.ok()) return absl::UnavailableError("echo: " + outcome.to_string());
  return got;
}

}  // namespace embed
