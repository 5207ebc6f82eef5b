// The README's echo server, compiled and run as written (keep the two in step), with a
// client that checks what comes back.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "io/io.h"
#include "io/test_util.h"
#include "lwkt/runtime.h"
#include "lwkt/sleep.h"
#include "lwkt/thread.h"

namespace {

// ---- README begin
// An acceptor on every worker; one lwkt thread per connection, on the acceptor's worker.
std::vector<lwkt::thread_ref> serve(lwkt::Runtime& rt, int listen_fd) {
  std::vector<lwkt::thread_ref> acceptors;
  for (int w = 0; w < rt.workers(); ++w) {
    acceptors.push_back(*rt.spawn([listen_fd] {
      for (;;) {
        lwkt::io::result c = lwkt::io::accept(listen_fd, nullptr, nullptr);
        if (!c.ok()) return;  // EINTR: lwkt::interrupt() asked it to stop
        const int fd = static_cast<int>(c.value());
        (void)lwkt::create([fd] {  // detached
          char buf[4096];
          for (lwkt::io::result n; (n = lwkt::io::recv(fd, buf, sizeof buf)).value() > 0;) {
            if (!lwkt::io::send_all(fd, buf, n.value()).ok()) break;
          }
          (void)lwkt::io::close(fd);
        }, {.name = "conn"});
      }
    }, {.name = "acceptor", .worker = w}));
  }
  return acceptors;
}
// ---- README end

TEST(Readme, EchoServerEchoes) {
  auto rt = lwkt::Runtime::create({.workers = 2});
  ASSERT_TRUE(rt.ok()) << rt.status();
  sockaddr_in addr;
  const int lfd = lwkt::io::test_util::listen_loopback(&addr, 64);
  ASSERT_GE(lfd, 0);
  std::vector<lwkt::thread_ref> acceptors = serve(**rt, lfd);
  for (int i = 0; i < 8; ++i) {  // plain blocking clients on this OS thread
    const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const std::string msg = "hello " + std::to_string(i);
    ASSERT_EQ(::send(c, msg.data(), msg.size(), 0), static_cast<ssize_t>(msg.size()));
    std::string got(msg.size(), '\0');
    ASSERT_EQ(::recv(c, got.data(), got.size(), MSG_WAITALL), static_cast<ssize_t>(msg.size()));
    EXPECT_EQ(got, msg);
    ::close(c);
  }
  for (auto& a : acceptors) lwkt::interrupt(a.get());
  for (auto& a : acceptors) a.join();
  ::close(lfd);
  EXPECT_TRUE((*rt)->shutdown(absl::Seconds(5)).ok());
}

}  // namespace
