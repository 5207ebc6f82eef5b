// files.h: static files under a root directory, with path traversal refused. The kernel
// does the confinement: openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) relative to the
// root's descriptor fails for any path, `..` or symlink included, that would leave it.
#pragma once

#include <sys/stat.h>

#include <string>
#include <string_view>

namespace httpd {

// Decodes %XX escapes of a request target's path (the query removed). False on a
// malformed escape or an encoded NUL or '/' (ambiguous: refused as a bad request).
bool decode_path(std::string_view target, std::string* path);

struct open_file {
  int status = 0;  // 0: opened (fd, st valid); else the HTTP status to answer (403, 404)
  int fd = -1;
  struct stat st = {};
};
// Opens the decoded `path` (starting with '/') below root_fd; a path ending in '/' means its
// index.html. A `..` segment is refused (403) before the kernel is asked; an escape through
// a symlink is refused by the kernel (403); a missing file or a non-regular one is 404.
// Where openat2 is missing (Linux < 5.6, qemu-user) the fallback resolves the path with
// realpath and refuses any result outside root_real (the root's own realpath); that check
// races with a concurrent rename inside the root, which openat2 does not.
// Runs on: any thread (openat2 and fstat are short blocking calls on the page cache).
open_file open_below(int root_fd, const std::string& root_real, const std::string& path);

}  // namespace httpd
