// test_util.h: helpers shared by //io's tests (testonly).
//   test_backend()        the backend under test: io_uring, or epoll when
//                         LWKT_IO_TEST_BACKEND=epoll (the //io:*_epoll targets)
//   open_fds()            descriptors this process has open, less the symbolizer's
//                         cache of mapped objects (for leak checks)
//   listen_loopback(&a)   a listening TCP socket on 127.0.0.1, its address in a
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "lwkt/runtime.h"

namespace lwkt::io::test_util {

inline io_backend test_backend() {
  const char* b = std::getenv("LWKT_IO_TEST_BACKEND");
  return b && std::string(b) == "epoll" ? io_backend::epoll : io_backend::io_uring;
}

// Descriptors this process has open, less those on files that are also mapped into it
// (the executable and its shared libraries): absl::Symbolize, which the stall monitor uses
// for its backtraces, keeps one such descriptor per object in a process-wide cache. Those
// are bounded by the number of loaded objects; a leak that the checks look for (a socket,
// an eventfd, an io_uring) is never one of them.
inline int open_fds() {
  std::string maps;
  if (FILE* f = std::fopen("/proc/self/maps", "re")) {
    char buf[4096];
    for (std::size_t k; (k = std::fread(buf, 1, sizeof buf, f)) > 0;) maps.append(buf, k);
    std::fclose(f);
  }
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.' || std::atoi(e->d_name) == dirfd(d)) continue;
    char target[4096];
    const ssize_t len = readlink((std::string("/proc/self/fd/") + e->d_name).c_str(), target,
                                 sizeof target - 1);
    if (len > 1 && target[0] == '/' && target[1] != '[' &&
        maps.find(" " + std::string(target, len) + "\n") != std::string::npos) {
      continue;  // a mapped object (the symbolizer's cache)
    }
    ++n;
  }
  closedir(d);
  return n;
}

// -1 on failure (the caller's ASSERT reports it).
inline int listen_loopback(sockaddr_in* addr, int backlog = 512) {
  const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  *addr = {};
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof *addr;
  if (lfd < 0 || bind(lfd, reinterpret_cast<sockaddr*>(addr), sizeof *addr) != 0 ||
      listen(lfd, backlog) != 0 || getsockname(lfd, reinterpret_cast<sockaddr*>(addr), &len) != 0) {
    return -1;
  }
  return lfd;
}

}  // namespace lwkt::io::test_util
