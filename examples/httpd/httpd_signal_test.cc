// The httpd binary under SIGINT / SIGTERM: it stops accepting, lets an in-flight response
// finish, closes idle connections and exits 0 within --drain_timeout; a second signal ends
// it at once (status 130).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "examples/httpd/test_client.h"
#include "gtest/gtest.h"

namespace httpd {
namespace {

using testing::connect_to;
using testing::get;
using testing::reader;
using testing::send_str;

struct child {
  pid_t pid = -1;
  int port = 0;
};

// stderr_path: where the child's stderr goes (empty: inherited).
child spawn_httpd(const std::vector<std::string>& extra, const std::string& stderr_path = "") {
  const std::string bin = absl::StrCat(std::getenv("TEST_SRCDIR"), "/lwkt/examples/httpd/httpd");
  int out[2];
  EXPECT_EQ(pipe(out), 0);
  child c;
  c.pid = fork();
  if (c.pid == 0) {
    dup2(out[1], 1);
    if (!stderr_path.empty()) {
      const int e = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(e, 2);
    }
    std::vector<std::string> args = {bin, "--port=0", "--workers=2", "--address=127.0.0.1"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  ::close(out[1]);
  std::string line;
  char ch;
  while (::read(out[0], &ch, 1) == 1 && ch != '\n') line.push_back(ch);
  ::close(out[0]);
  const std::size_t colon = line.rfind(':', line.find(" with "));
  EXPECT_NE(colon, std::string::npos) << "httpd printed: " << line;
  if (colon != std::string::npos) c.port = std::atoi(line.c_str() + colon + 1);
  return c;
}

int wait_exit(pid_t pid, absl::Duration limit, absl::Duration* took) {
  const absl::Time t0 = absl::Now();
  int st = 0;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    if (absl::Now() - t0 > limit) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  *took = absl::Now() - t0;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::string make_root() {
  const std::string root = testing::temp_dir();
  std::ofstream(root + "/big.bin", std::ios::binary) << std::string(16 << 20, 's');
  return root;
}

TEST(HttpdSignal, SigintDrainsInFlightAndExitsZero) {
  for (int sig : {SIGINT, SIGTERM}) {
    const child c = spawn_httpd({"--root=" + make_root(), "--drain_timeout=10s"});
    ASSERT_GT(c.port, 0);
    const int idle = connect_to(c.port);
    reader ird(idle);
    ASSERT_TRUE(send_str(idle, get("/nothing")));
    EXPECT_EQ(ird.next().status, 404);
    const int busy = connect_to(c.port);
    int rcvbuf = 65536;  // smaller than the file: the response is still in flight at the drain
    setsockopt(busy, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    ASSERT_TRUE(send_str(busy, get("/big.bin")));
    char b[4096];
    ASSERT_GT(testing::recv_retry(busy, b, sizeof b), 0);
    kill(c.pid, sig);
    EXPECT_TRUE(ird.at_eof());
    std::size_t got = 0;
    for (ssize_t n; (n = testing::recv_retry(busy, b, sizeof b)) > 0;) got += static_cast<std::size_t>(n);
    EXPECT_GT(got, (16u << 20) - 4096) << "signal " << sig;
    absl::Duration took;
    EXPECT_EQ(wait_exit(c.pid, absl::Seconds(20), &took), 0) << "signal " << sig;
    ::close(idle);
    ::close(busy);
  }
}

TEST(HttpdSignal, SecondSignalExitsAtOnce) {
  const child c = spawn_httpd({"--root=" + make_root(), "--drain_timeout=60s"});
  ASSERT_GT(c.port, 0);
  const int stuck = connect_to(c.port);  // never reads its 16 MiB: the drain cannot finish
  int rcvbuf = 65536;  // smaller than the file: the response is still in flight at the drain
  setsockopt(stuck, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  ASSERT_TRUE(send_str(stuck, get("/big.bin")));
  absl::SleepFor(absl::Milliseconds(100));
  kill(c.pid, SIGINT);
  absl::SleepFor(absl::Milliseconds(200));
  kill(c.pid, SIGINT);
  absl::Duration took;
  EXPECT_EQ(wait_exit(c.pid, absl::Seconds(10), &took), 130);
  EXPECT_LT(took, absl::Seconds(5));
  ::close(stuck);
}

// --access_log: one line per request on stderr (off by default: nothing is logged).
TEST(HttpdSignal, AccessLogIsOptional) {
  for (const bool on : {true, false}) {
    const std::string log = absl::StrCat(std::getenv("TEST_TMPDIR"), "/access", on, ".log");
    const child c = spawn_httpd(on ? std::vector<std::string>{"--access_log"}
                                   : std::vector<std::string>{}, log);
    ASSERT_GT(c.port, 0);
    const int fd = connect_to(c.port);
    reader rd(fd);
    ASSERT_TRUE(send_str(fd, get("/logged?x=1") + "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"));
    EXPECT_EQ(rd.next().status, 200);
    EXPECT_EQ(rd.next(/*head=*/true).status, 200);
    ::close(fd);
    kill(c.pid, SIGTERM);
    absl::Duration took;
    EXPECT_EQ(wait_exit(c.pid, absl::Seconds(20), &took), 0);
    std::ifstream f(log);
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const bool get_line = text.find("127.0.0.1 \"GET /logged?x=1\" 200 14\n") != std::string::npos;
    const bool head_line = text.find("127.0.0.1 \"HEAD /\" 200 0\n") != std::string::npos;
    EXPECT_EQ(get_line, on) << text;
    EXPECT_EQ(head_line, on) << text;
  }
}

}  // namespace
}  // namespace httpd
