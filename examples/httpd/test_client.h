// test_client.h: a small blocking HTTP/1.1 client for the httpd tests, independent of the
// server's parser: it reads responses by their framing (status line, headers, Content-Length)
// and says exactly what is malformed.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

namespace httpd::testing {

inline int connect_to(int port, int timeout_s = 10) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{timeout_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    // A signal cut the wait short (a socket with SO_SNDTIMEO is never restarted): the
    // handshake goes on; wait for it.
    int err = errno;
    if (err == EINTR) {
      pollfd p{fd, POLLOUT, 0};
      socklen_t len = sizeof err;
      while (::poll(&p, 1, timeout_s * 1000) < 0 && errno == EINTR) {}
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    }
    if (err != 0) {
      ::close(fd);
      errno = err;
      return -1;
    }
  }
  return fd;
}

// recv, retried when a signal interrupts it (the runtime's monitor signals its workers; an
// interrupted wait elsewhere in the process can surface here as EINTR).
inline ssize_t recv_retry(int fd, void* b, std::size_t n) {
  ssize_t r;
  while ((r = ::recv(fd, b, n, 0)) < 0 && errno == EINTR) {}
  return r;
}

inline bool send_str(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

struct response {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string error;  // non-empty: malformed (or the connection ended first)
  bool ok() const { return error.empty(); }
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// Reads one response from fd, with `buffered` holding bytes already read past the last one
// (updated). `head`: a response to HEAD (no body). Timeout or EOF before a whole response:
// error set ("eof" when nothing at all arrived).
class reader {
 public:
  explicit reader(int fd) : _fd(fd) {}

  response next(bool head = false) {
    response r;
    std::size_t end;
    while ((end = _buf.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) {
        r.error = _buf.empty() ? "eof" : "connection ended inside a header: " + _buf.substr(0, 80);
        return r;
      }
    }
    const std::string head_text = _buf.substr(0, end);
    _buf.erase(0, end + 4);
    const std::size_t eol = head_text.find("\r\n");
    const std::string line = head_text.substr(0, eol);
    if (line.size() < 13 || line.compare(0, 9, "HTTP/1.1 ") != 0 || !std::isdigit(line[9]) ||
        !std::isdigit(line[10]) || !std::isdigit(line[11]) || line[12] != ' ') {
      r.error = "bad status line: " + line;
      return r;
    }
    r.status = std::atoi(line.c_str() + 9);
    for (std::size_t at = eol == std::string::npos ? head_text.size() : eol + 2;
         at < head_text.size();) {
      std::size_t next = head_text.find("\r\n", at);
      if (next == std::string::npos) next = head_text.size();
      const std::string h = head_text.substr(at, next - at);
      const std::size_t colon = h.find(':');
      if (colon == std::string::npos || colon == 0) {
        r.error = "bad header line: " + h;
        return r;
      }
      std::string name = h.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::size_t v = colon + 1;
      while (v < h.size() && h[v] == ' ') ++v;
      r.headers[name] = h.substr(v);
      at = next + 2;
    }
    if (r.status == 304 || head) return r;
    const std::string cl = r.header("content-length");
    if (cl.empty()) {
      r.error = "no Content-Length";
      return r;
    }
    const std::size_t len = std::strtoull(cl.c_str(), nullptr, 10);
    while (_buf.size() < len) {
      if (!fill()) {
        r.error = "connection ended inside a body";
        return r;
      }
    }
    r.body = _buf.substr(0, len);
    _buf.erase(0, len);
    return r;
  }

  // True once the peer has closed with nothing more buffered.
  bool at_eof() { return _buf.empty() && !fill(); }

 private:
  bool fill() {
    char b[65536];
    const ssize_t n = recv_retry(_fd, b, sizeof b);
    if (n <= 0) return false;
    _buf.append(b, static_cast<std::size_t>(n));
    return true;
  }
  int _fd;
  std::string _buf;
};

// A new empty directory under the test's TEST_TMPDIR (bazel removes it), or /tmp by hand;
// readable by everyone (a server dropping privileges must read it). "" on failure.
inline std::string temp_dir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/httpd_XXXXXX";  // mkdtemp's pattern
  if (!mkdtemp(tmpl.data())) return "";
  chmod(tmpl.c_str(), 0755);
  return tmpl;
}

inline std::string get(std::string_view target, std::string_view extra = {}) {
  return std::string("GET ") + std::string(target) + " HTTP/1.1\r\nHost: t\r\n" +
         std::string(extra) + "\r\n";
}

}  // namespace httpd::testing
