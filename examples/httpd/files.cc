#include "examples/httpd/files.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <atomic>
#include <cerrno>

#include "absl/strings/str_split.h"

namespace httpd {

namespace {
int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

bool decode_path(std::string_view target, std::string* path) {
  target = target.substr(0, target.find('?'));
  path->clear();
  for (std::size_t i = 0; i < target.size(); ++i) {
    if (target[i] != '%') {
      path->push_back(target[i]);
      continue;
    }
    if (i + 2 >= target.size()) return false;
    const int h = hex(target[i + 1]), l = hex(target[i + 2]);
    if (h < 0 || l < 0) return false;
    const char c = static_cast<char>(h * 16 + l);
    if (c == '\0' || c == '/') return false;
    path->push_back(c);
    i += 2;
  }
  return !path->empty() && (*path)[0] == '/';
}

namespace {
int open_by_realpath(const std::string& root_real, const std::string& rel) {
  char resolved[PATH_MAX];
  if (!realpath((root_real + "/" + rel).c_str(), resolved)) return -1;
  const std::string r = resolved;
  if (r.compare(0, root_real.size() + 1, root_real + "/") != 0) {
    errno = EXDEV;  // outside the root, as openat2 says it
    return -1;
  }
  return ::open(resolved, O_RDONLY | O_CLOEXEC | O_NOCTTY);
}
}  // namespace

open_file open_below(int root_fd, const std::string& root_real, const std::string& path) {
  open_file f;
  std::string rel;
  for (absl::string_view seg : absl::StrSplit(path, '/')) {
    if (seg.empty() || seg == ".") continue;
    if (seg == "..") {
      f.status = 403;
      return f;
    }
    if (!rel.empty()) rel.push_back('/');
    rel.append(seg.data(), seg.size());
  }
  if (path.back() == '/') rel.append(rel.empty() ? "index.html" : "/index.html");
  open_how how = {};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  static std::atomic<bool> no_openat2{false};
  int fd = -1;
  if (!no_openat2.load(std::memory_order_relaxed)) {
    fd = static_cast<int>(syscall(SYS_openat2, root_fd, rel.c_str(), &how, sizeof how));
    if (fd < 0 && errno == ENOSYS) no_openat2.store(true, std::memory_order_relaxed);
  }
  if (no_openat2.load(std::memory_order_relaxed)) fd = open_by_realpath(root_real, rel);
  if (fd < 0) {
    f.status = (errno == EXDEV || errno == ELOOP || errno == EACCES || errno == EPERM) ? 403 : 404;
    return f;
  }
  if (fstat(fd, &f.st) != 0 || !S_ISREG(f.st.st_mode)) {
    ::close(fd);
    f.status = 404;
    return f;
  }
  f.fd = fd;
  return f;
}

}  // namespace httpd
