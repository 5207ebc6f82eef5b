// connection.cc: one lwkt thread per connection. It reads into a buffer, lets Beast's
// request_parser take as many complete requests as the buffer holds (pipelining), appends
// their responses to one output buffer, and sends that with one send_all before reading
// again. Timeouts are io::recv deadlines: keepalive_timeout while idle (nothing of a next
// request yet), the request's own deadline (request_timeout after its first byte) while a
// request is incomplete.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "examples/httpd/connection.h"
#include "examples/httpd/files.h"
#include "examples/httpd/response.h"
#include "io/io.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"

namespace httpd {

namespace http = boost::beast::http;
using request = http::request<http::string_body>;
using parser = http::request_parser<http::string_body>;

namespace {

std::string_view sv(boost::beast::string_view s) { return std::string_view(s.data(), s.size()); }

constexpr std::size_t kInMemoryFile = 1 << 20;  // larger files are streamed
constexpr std::size_t kStreamChunk = 64 * 1024;

struct reply {
  int status = 200;
  long long body_bytes = 0;
  bool keep_alive = true;
};

// A short text/plain response; a request that was malformed closes its connection.
void error_reply(server::state* s, int status, bool keep_alive, std::string* out, reply* r) {
  const std::string body = absl::StrCat(status, " ", reason_phrase(status), "\n");
  append_head(out, status, static_cast<long long>(body.size()), keep_alive, "text/plain",
              s->opts.extra_headers);
  out->append(body);
  *r = {status, static_cast<long long>(body.size()), keep_alive};
}

int status_for(const boost::beast::error_code& ec) {
  if (ec == http::error::header_limit) return 431;
  if (ec == http::error::body_limit) return 413;
  return 400;  // malformed (bad_transfer_encoding: duplicate or conflicting framing too)
}

std::string stats_text(server::state* s) {
  std::string t;
  if (auto snap = s->rt->snapshot(); snap.ok()) t = snap->ps();
  const lwkt::io::io_stats io = lwkt::io::stats();
  const counters c{s->accepted.load(), s->requests.load(), s->handed_off.load(), s->open.load()};
  absl::StrAppendFormat(&t,
                        "io: rings %u ops %u submits %u reaps %u waits %u sq_full %u "
                        "cq_overflows %u cancels %u pool_enobufs %u msg_ring_kicks %u\n"
                        "httpd: accepted %u requests %u handed_off %u open %d\n",
                        io.rings, io.ops, io.submits, io.reaps, io.waits, io.sq_full,
                        io.cq_overflows, io.cancels, io.pool_enobufs, io.msg_ring_kicks,
                        c.accepted, c.requests, c.handed_off, c.open);
  return t;
}

// Reads the whole of [0, n) of fd into dst. False on a short file or an error.
bool read_all(int fd, char* dst, std::size_t n, off_t at) {
  for (std::size_t got = 0; got < n;) {
    const lwkt::io::result r = lwkt::io::read(fd, dst + got, n - got, at + static_cast<off_t>(got));
    if (!r.ok() || r.value() == 0) return false;
    got += static_cast<std::size_t>(r.value());
  }
  return true;
}

// A static file: appends the response, or (large files) sends the head and streams the
// body itself. False when the connection must close at once (a send failed, the file
// shrank under us).
bool file_reply(server::state* s, int conn, const request& req, bool head, std::string* out,
                reply* r) {
  std::string path;
  if (!decode_path(sv(req.target()), &path)) {
    error_reply(s, 400, false, out, r);
    return true;
  }
  open_file f = open_below(s->root_fd, s->root_real, path);
  if (f.status != 0) {  // 403, 404: the connection stays
    error_reply(s, f.status, r->keep_alive, out, r);
    return true;
  }
  const std::string extra = absl::StrCat("Last-Modified: ", http_date(f.st.st_mtime), "\r\n",
                                         s->opts.extra_headers);
  std::time_t ims;
  const auto it = req.find(http::field::if_modified_since);
  if (it != req.end() && parse_http_date(sv(it->value()), &ims) && f.st.st_mtime <= ims) {
    append_head(out, 304, -1, r->keep_alive, {}, extra);
    r->status = 304;
    ::close(f.fd);
    return true;
  }
  const auto size = static_cast<std::size_t>(f.st.st_size);
  append_head(out, 200, static_cast<long long>(size), r->keep_alive, content_type_for(path), extra);
  r->body_bytes = head ? 0 : static_cast<long long>(size);
  bool ok = true;
  if (!head && size <= kInMemoryFile) {
    const std::size_t at = out->size();
    out->resize(at + size);
    ok = read_all(f.fd, out->data() + at, size, 0);
  } else if (!head) {
    ok = lwkt::io::send_all(conn, out->data(), out->size()).ok();
    out->clear();
    std::string chunk(kStreamChunk, '\0');
    for (std::size_t sent = 0; ok && sent < size; sent += chunk.size()) {
      chunk.resize(std::min(kStreamChunk, size - sent));
      ok = read_all(f.fd, chunk.data(), chunk.size(), static_cast<off_t>(sent)) &&
           lwkt::io::send_all(conn, chunk.data(), chunk.size()).ok();
    }
  }
  ::close(f.fd);
  return ok;
}

// Appends the response to one complete request. False: close now, sending nothing more.
bool respond(server::state* s, int conn, const request& req, std::string* out, reply* r) {
  r->keep_alive = req.keep_alive() && !s->draining.load(std::memory_order_relaxed);
  const auto te = req.find(http::field::transfer_encoding);
  if (te != req.end() && !boost::beast::iequals(te->value(), "chunked")) {
    error_reply(s, 501, false, out, r);  // a coding we cannot undo (gzip, ...): Not Implemented
    return true;
  }
  const bool head = req.method() == http::verb::head;
  if (!head && req.method() != http::verb::get) {
    const std::string body = "405 Method Not Allowed\n";
    append_head(out, 405, static_cast<long long>(body.size()), r->keep_alive, "text/plain",
                absl::StrCat("Allow: GET, HEAD\r\n", s->opts.extra_headers));
    out->append(body);
    *r = {405, static_cast<long long>(body.size()), r->keep_alive};
    return true;
  }
  if (s->opts.stats && req.target() == "/-/stats") {
    const std::string body = stats_text(s);
    append_head(out, 200, static_cast<long long>(body.size()), r->keep_alive, "text/plain",
                s->opts.extra_headers);
    if (!head) out->append(body);
    r->body_bytes = head ? 0 : static_cast<long long>(body.size());
    return true;
  }
  if (s->root_fd >= 0) return file_reply(s, conn, req, head, out, r);
  const std::string& body = s->opts.body;
  append_head(out, 200, static_cast<long long>(body.size()), r->keep_alive, "text/plain",
              s->opts.extra_headers);
  if (!head) out->append(body);
  r->body_bytes = head ? 0 : static_cast<long long>(body.size());
  return true;
}

void access_log(const std::string& peer, const request& req, const reply& r) {
  const std::string line =
      absl::StrFormat("%s \"%s %s\" %d %d\n", peer, std::string(req.method_string()),
                      std::string(req.target()), r.status, r.body_bytes);
  (void)lwkt::io::write(STDERR_FILENO, line.data(), line.size(), -1);
}

std::string peer_of(int fd) {
  sockaddr_in a = {};
  socklen_t len = sizeof a;
  char ip[INET_ADDRSTRLEN] = "?";
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
  }
  return ip;
}

void new_parser(std::optional<parser>* p, const options& o) {
  p->emplace();
  (*p)->header_limit(static_cast<std::uint32_t>(o.max_header_bytes));
  (*p)->body_limit(o.max_body_bytes);
  (*p)->eager(true);
}

// Returns true when the server closes first (an error, Connection: close, a timeout):
// the caller then closes gracefully (lingering_close).
bool serve(server::state* s, int fd, conn_entry* me) {
  const options& o = s->opts;
  const std::string peer = o.access_log ? peer_of(fd) : std::string();
  std::string in, out;
  std::size_t off = 0;  // in[0, off) is consumed
  std::optional<parser> p;
  absl::Time request_deadline = absl::InfiniteFuture();
  char buf[16 * 1024];
  for (;;) {
    bool close_now = false;
    while (off < in.size() && !close_now) {
      if (!p) {
        new_parser(&p, o);
        request_deadline = absl::Now() + o.request_timeout;
      }
      boost::beast::error_code ec;
      off += p->put(boost::asio::const_buffer(in.data() + off, in.size() - off), ec);
      if (ec == http::error::need_more) break;
      reply r;
      if (ec) {
        error_reply(s, status_for(ec), false, &out, &r);
        close_now = true;
      } else if (!p->is_done()) {
        break;  // the header is in, the body is not: read more
      } else {
        s->requests.fetch_add(1, std::memory_order_relaxed);
        if (!respond(s, fd, p->get(), &out, &r)) return false;
        close_now = !r.keep_alive;
        if (o.access_log) access_log(peer, p->get(), r);
        p.reset();
      }
    }
    if (!out.empty()) {
      if (!lwkt::io::send_all(fd, out.data(), out.size()).ok()) return false;  // reset, shutdown
      out.clear();
    }
    if (close_now) return true;
    in.erase(0, off);
    off = 0;
    const bool idle = in.empty() && (!p || !p->got_some());
    if (idle && s->draining.load(std::memory_order_acquire)) return false;
    me->idle = idle;
    const absl::Time deadline = idle ? absl::Now() + o.keepalive_timeout : request_deadline;
    const lwkt::io::result r = lwkt::io::recv(fd, buf, sizeof buf, 0, deadline);
    me->idle = false;
    if (!r.ok()) {
      if (r.error() == ETIMEDOUT && !idle) {
        reply ignored;
        error_reply(s, 408, false, &out, &ignored);
        return lwkt::io::send_all(fd, out.data(), out.size()).ok();
      }
      return false;  // idle timeout, EINTR (drain), ECANCELED (shutdown), a reset
    }
    if (r.value() == 0) return false;  // the client closed
    in.append(buf, static_cast<std::size_t>(r.value()));
  }
}

// Closing with the client's bytes still unread would make the kernel send a reset, which
// can destroy the response in the client's receive queue before it reads it. So: half-close,
// read and discard until the client closes too (or a second passes), then close (nginx's
// lingering close).
void lingering_close(int fd) {
  if (!lwkt::io::shutdown(fd, SHUT_WR).ok()) return;
  const absl::Time until = absl::Now() + absl::Seconds(1);
  char sink[4096];
  for (std::size_t total = 0; total < (1u << 20);) {
    const lwkt::io::result r = lwkt::io::recv(fd, sink, sizeof sink, 0, until);
    if (!r.ok() || r.value() == 0) return;
    total += static_cast<std::size_t>(r.value());
  }
}

}  // namespace

void run_connection(server::state* s, int fd, int w) {
  worker_state& ws = s->ws[static_cast<std::size_t>(w)];
  conn_entry me{lwkt::curthread(), false, ws.conns.size()};
  ws.conns.push_back(&me);
  if (serve(s, fd, &me)) lingering_close(fd);
  conn_entry* last = ws.conns.back();  // swap-remove: O(1) with 10,000 connections
  ws.conns[me.index] = last;
  last->index = me.index;
  ws.conns.pop_back();
  (void)lwkt::io::close(fd);
  s->open_per_worker[static_cast<std::size_t>(w)].fetch_sub(1, std::memory_order_relaxed);
  s->open.fetch_sub(1, std::memory_order_release);
}

void interrupt_idle(server::state* s, int w) {
  for (conn_entry* c : s->ws[static_cast<std::size_t>(w)].conns) {
    if (c->idle) lwkt::interrupt(c->td);
  }
}

}  // namespace httpd
