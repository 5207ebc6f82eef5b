#include "examples/httpd/response.h"

#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace httpd {

namespace {
constexpr const char* kImfFixdate = "%a, %d %b %Y %H:%M:%S GMT";
// Debian's Abseil is built with its own string_view, not std::string_view.
absl::string_view av(std::string_view s) { return absl::string_view(s.data(), s.size()); }
}  // namespace

std::string http_date(std::time_t t) {
  return absl::FormatTime(kImfFixdate, absl::FromTimeT(t), absl::UTCTimeZone());
}

bool parse_http_date(std::string_view s, std::time_t* out) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(kImfFixdate, av(s), absl::UTCTimeZone(), &t, &err)) return false;
  *out = absl::ToTimeT(t);
  return true;
}

std::string_view current_date() {
  // Per worker OS thread: the lwkt thread cannot migrate between these lines (no switch
  // point), so the thread_local is the worker's.
  thread_local std::time_t cached_sec = 0;
  thread_local char cached[40];
  thread_local std::size_t cached_len = 0;
  const std::time_t now = std::time(nullptr);
  if (now != cached_sec) {
    const std::string d = http_date(now);
    cached_len = std::min(d.size(), sizeof cached);
    std::memcpy(cached, d.data(), cached_len);
    cached_sec = now;
  }
  return std::string_view(cached, cached_len);
}

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

const char* content_type_for(std::string_view path) {
  const std::size_t dot = path.rfind('.');
  const std::string_view ext = dot == std::string_view::npos ? "" : path.substr(dot + 1);
  if (ext == "html" || ext == "htm") return "text/html";
  if (ext == "txt") return "text/plain";
  if (ext == "css") return "text/css";
  if (ext == "js") return "text/javascript";
  if (ext == "json") return "application/json";
  if (ext == "png") return "image/png";
  if (ext == "jpg" || ext == "jpeg") return "image/jpeg";
  if (ext == "svg") return "image/svg+xml";
  return "application/octet-stream";
}

void append_head(std::string* out, int status, long long content_length, bool keep_alive,
                 std::string_view content_type, std::string_view extra) {
  absl::StrAppend(out, "HTTP/1.1 ", status, " ", reason_phrase(status),
                  "\r\nServer: lwkt-httpd\r\nDate: ", av(current_date()), "\r\n");
  if (!content_type.empty()) absl::StrAppend(out, "Content-Type: ", av(content_type), "\r\n");
  if (content_length >= 0) absl::StrAppend(out, "Content-Length: ", content_length, "\r\n");
  if (!keep_alive) out->append("Connection: close\r\n");
  out->append(extra.data(), extra.size());
  out->append("\r\n");
}

}  // namespace httpd
