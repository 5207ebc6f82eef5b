// test_util.h: helpers shared by //io's tests (testonly).
//   test_backend()        the backend under test: io_uring, or epoll when
//                         LWKT_IO_TEST_BACKEND=epoll (the //io:*_epoll targets)
//   open_fds()            descriptors this process has open (for leak checks)
//   listen_loopback(&a)   a listening TCP socket on 127.0.0.1, its address in a
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdlib>
#include <string>

#include "lwkt/runtime.h"

namespace lwkt::io::test_util {

inline io_backend test_backend() {
  const char* b = std::getenv("LWKT_IO_TEST_BACKEND");
  return b && std::string(b) == "epoll" ? io_backend::epoll : io_backend::io_uring;
}

inline int open_fds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;  // the DIR's own
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
