// response.h: the bytes of HTTP/1.1 responses (status line, the headers every response
// carries, dates). No I/O here; server.cc sends what these build.
#pragma once

#include <ctime>
#include <string>
#include <string_view>

namespace httpd {

// "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 IMF-fixdate).
std::string http_date(std::time_t t);
// Parses an IMF-fixdate; false if `s` is not one.
bool parse_http_date(std::string_view s, std::time_t* out);
// The current second's Date value, formatted at most once per second per worker.
// Runs on: an lwkt thread (no switch point inside).
std::string_view current_date();
// "OK", "Not Found", ...
const char* reason_phrase(int status);
// By file extension; application/octet-stream when unknown.
const char* content_type_for(std::string_view path);

// Appends a status line and the common headers (Server, Date, Content-Length unless
// content_length < 0, Connection: close when !keep_alive, then `extra` lines, each ending in
// CRLF) and the blank line.
void append_head(std::string* out, int status, long long content_length, bool keep_alive,
                 std::string_view content_type, std::string_view extra = {});

}  // namespace httpd
