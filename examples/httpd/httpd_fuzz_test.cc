// A seeded random-request fuzzer against the live server: at least 10^5 requests (scaled
// down under sanitizers, saying so), mutated valid ones and invalid ones, split across
// connections and client threads. Each connection sends a batch and half-closes; the
// byte stream that comes back must be a sequence of well-formed responses (status line,
// headers, Content-Length and exactly that many bytes) ending in a close, within a bound.
// No crash, no hang, and the server still serves afterwards with nothing left open.
// Replay: HTTPD_FUZZ_SEED=N.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "examples/httpd/server.h"
#include "examples/httpd/test_client.h"
#include "gtest/gtest.h"

namespace httpd {
namespace {

using testing::connect_to;
using testing::reader;
using testing::send_str;

std::string pick(std::mt19937_64& g, std::initializer_list<const char*> xs) {
  std::uniform_int_distribution<std::size_t> d(0, xs.size() - 1);
  return *(xs.begin() + d(g));
}

// A well-formed request with random valid parts.
std::string valid_request(std::mt19937_64& g) {
  std::uniform_int_distribution<int> pct(0, 99);
  const bool post = pct(g) < 15;
  std::string r = post ? "POST " : "GET ";
  r += pick(g, {"/", "/index.html", "/a/b/c", "/?q=1", "/%41%42"});
  r += pick(g, {" HTTP/1.1\r\n", " HTTP/1.1\r\n", " HTTP/1.0\r\nConnection: keep-alive\r\n"});
  r += "Host: example\r\n";
  if (pct(g) < 30) r += "X-Long: " + std::string(std::uniform_int_distribution<int>(0, 3000)(g), 'v') + "\r\n";
  if (pct(g) < 20) r += "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n";
  if (pct(g) < 3) r += "Connection: close\r\n";
  const int body = post ? std::uniform_int_distribution<int>(0, 150)(g) : 0;
  if (post) r += absl::StrCat("Content-Length: ", body, "\r\n");
  return r + "\r\n" + std::string(static_cast<std::size_t>(body), 'b');
}

// A request, valid or not: most are valid; the rest are templates with random (often
// invalid) parts, a third of those with byte-level mutations on top.
std::string random_request(std::mt19937_64& g) {
  std::uniform_int_distribution<int> pct(0, 99);
  if (pct(g) < 60) return valid_request(g);
  std::string r = pick(g, {"GET", "GET", "GET", "POST", "PUT", "DELETE", "OPTIONS", "G\x01T",
                           "", "get", "CONNECT"});
  r += pick(g, {" ", " ", " ", "  ", "\t", ""});
  r += pick(g, {"/", "/index.html", "/a/../../b", "/%2e%2e/x", "/%zz", "/%00", "*",
                "http://h/x", "/?q=1&r=%20", ""});
  if (pct(g) < 3) r += "/" + std::string(3000, 'a');
  r += pick(g, {" HTTP/1.1", " HTTP/1.1", " HTTP/1.0", " HTTP/2.0", " HTTP/1.1x", "", " http/1.1"});
  r += pick(g, {"\r\n", "\r\n", "\n", "\r"});
  const int headers = std::uniform_int_distribution<int>(0, 6)(g);
  int body = 0;
  for (int i = 0; i < headers; ++i) {
    const int k = pct(g);
    if (k < 30) {
      r += "Host: example\r\n";
    } else if (k < 45) {
      body = std::uniform_int_distribution<int>(0, 300)(g);
      r += absl::StrCat("Content-Length: ", pct(g) < 10 ? -1 : body, "\r\n");
    } else if (k < 55) {
      r += pick(g, {"Transfer-Encoding: chunked\r\n", "Transfer-Encoding: gzip\r\n",
                    "Transfer-Encoding: chunked, gzip\r\n"});
    } else if (k < 65) {
      r += pick(g, {"Connection: close\r\n", "Connection: keep-alive\r\n", "Connection: x\r\n"});
    } else if (k < 75) {
      r += "X-Long: " + std::string(std::uniform_int_distribution<int>(0, 12000)(g), 'v') + "\r\n";
    } else if (k < 85) {
      r += pick(g, {"NoColon\r\n", ": empty\r\n", "X: \x7f\x80\r\n", " folded\r\n"});
    } else {
      r += "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n";
    }
  }
  r += "\r\n";
  if (r.find("chunked") != std::string::npos && pct(g) < 70) {
    r += pick(g, {"5\r\nhello\r\n0\r\n\r\n", "zz\r\n", "3\r\nab\r\n", "0\r\n\r\n"});
  } else {
    r += std::string(static_cast<std::size_t>(body), 'b');
  }
  // Byte-level mutations on a third of them.
  const int mutations = pct(g) < 33 ? std::uniform_int_distribution<int>(1, 4)(g) : 0;
  for (int m = 0; m < mutations && !r.empty(); ++m) {
    std::uniform_int_distribution<std::size_t> at(0, r.size() - 1);
    const std::size_t i = at(g);
    switch (pct(g) % 4) {
      case 0: r[i] = static_cast<char>(g()); break;
      case 1: r.insert(i, 1, pick(g, {"\r", "\n", "\0", ":", " "})[0]); break;
      case 2: r.erase(i, 1); break;
      default: r.resize(i); break;  // truncated: the half-close ends it
    }
  }
  return r;
}

TEST(HttpdFuzz, RandomRequestsGetWellFormedResponsesAndNothingHangs) {
  std::uint64_t seed = 20261202;
  if (const char* s = std::getenv("HTTPD_FUZZ_SEED")) seed = std::strtoull(s, nullptr, 10);
  int total = 100000;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  total = 20000;
  std::printf("under a sanitizer: %d requests instead of 100000\n", total);
#endif
  options o;
  o.address = "127.0.0.1";
  o.port = 0;
  o.workers = 2;
  o.max_header_bytes = 8192;
  o.max_body_bytes = 200;
  o.request_timeout = absl::Seconds(5);
  auto srv = server::start(o);
  ASSERT_TRUE(srv.ok()) << srv.status();
  const int port = (*srv)->port();

  constexpr int kClients = 8, kBatch = 5;
  std::mutex mu;
  std::map<int, int> statuses;
  std::vector<std::string> failures;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937_64 g(seed * 1000003 + static_cast<std::uint64_t>(c));
      std::map<int, int> mine;
      for (int sent = 0; sent < total / kClients; sent += kBatch) {
        std::string batch;
        for (int i = 0; i < kBatch; ++i) batch += random_request(g);
        const int fd = connect_to(port, 15);
        if (fd < 0) {
          std::lock_guard<std::mutex> l(mu);
          failures.push_back("connect failed");
          return;
        }
        // The server may close (and reset) before reading it all: a failed send is fine.
        (void)send_str(fd, batch);
        ::shutdown(fd, SHUT_WR);
        reader rd(fd);
        for (;;) {
          const testing::response r = rd.next();
          if (r.error == "eof") break;
          if (!r.ok()) {
            // A reset after the server closed may cut the stream only between responses.
            std::lock_guard<std::mutex> l(mu);
            failures.push_back(absl::StrCat("client ", c, " batch at ", sent, ": ", r.error));
            break;
          }
          ++mine[r.status];
        }
        ::close(fd);
      }
      std::lock_guard<std::mutex> l(mu);
      for (auto [s, n] : mine) statuses[s] += n;
    });
  }
  for (auto& t : clients) t.join();
  std::string summary;
  int responses = 0;
  for (auto [s, n] : statuses) {
    absl::StrAppend(&summary, " ", s, ":", n);
    responses += n;
  }
  std::printf("seed %llu: %d requests sent, %d responses:%s\n",
              static_cast<unsigned long long>(seed), total, responses, summary.c_str());
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures[0];
  for (auto [s, n] : statuses) {
    EXPECT_TRUE(s == 200 || s == 400 || s == 405 || s == 413 || s == 431 || s == 501 || s == 408)
        << "unexpected status " << s;
  }
  EXPECT_GT(statuses[200], total / 10);
  EXPECT_GT(statuses[400], total / 50);
  // Still serving, and every connection closed.
  const int fd = connect_to(port);
  reader rd(fd);
  ASSERT_TRUE(send_str(fd, testing::get("/")));
  EXPECT_EQ(rd.next().status, 200);
  ::close(fd);
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while ((*srv)->stats().open > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ((*srv)->stats().open, 0);
}

}  // namespace
}  // namespace httpd
