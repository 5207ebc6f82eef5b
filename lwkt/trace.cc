// The event recorder and its Chrome / Perfetto JSON export (Runtime::Options::trace_events,
// trace_path, Runtime::write_trace). See internal/trace.h for who writes what.
#include "lwkt/internal/trace.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lwkt/internal/clock.h"
#include "lwkt/internal/completion.h"
#include "lwkt/internal/runtime_state.h"
#include "lwkt/internal/sched_internal.h"
#include "lwkt/runtime.h"

namespace lwkt {
namespace internal {

void trace_record(globaldata* gd, trace_type type, const void* td, std::int32_t a,
                  std::uint64_t b, const char* name) {
  trace_ring* r = gd->gd_trace;
  trace_event& e = r->ev[r->next % r->cap];
  ++r->next;
  e.tsc = cheap_clock();
  e.type = type;
  e.pad = 0;
  e.a = a;
  e.b = b;
  e.td = td;
  std::size_t n = 0;
  if (name) {
    for (; n + 1 < sizeof e.name && name[n]; ++n) e.name[n] = name[n];
    if (name[n] != 0) {
      // Cut: not inside a UTF-8 sequence (the JSON must stay valid UTF-8). Back off its
      // continuation bytes (10xxxxxx) and then its lead byte (11xxxxxx).
      while (n > 0 && (static_cast<unsigned char>(e.name[n - 1]) & 0xC0) == 0x80) --n;
      if (n > 0 && (static_cast<unsigned char>(e.name[n - 1]) & 0xC0) == 0xC0) --n;
    }
  }
  e.name[n] = 0;
}

std::vector<trace_event> trace_ring::copy() const {
  std::vector<trace_event> out;
  const std::uint64_t first = next > cap ? next - cap : 0;
  out.reserve(static_cast<std::size_t>(next - first));
  for (std::uint64_t i = first; i < next; ++i) out.push_back(ev[i % cap]);
  return out;
}

namespace {

// JSON string contents: quotes, backslashes and control characters escaped.
std::string esc(const char* s) {
  std::string out;
  for (; *s; ++s) {
    const unsigned char c = static_cast<unsigned char>(*s);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

const char* instant_name(trace_type t) {
  switch (t) {
    case trace_type::kScheduleLocal: return "schedule";
    case trace_type::kScheduleRemote: return "schedule remote";
    case trace_type::kWakeThread: return "woken";
    case trace_type::kIpiSend: return "ipi send";
    case trace_type::kIpiRecv: return "ipi recv";
    case trace_type::kTokenContended: return "token contended";
    case trace_type::kSleep: return "tsleep";
    case trace_type::kWakeup: return "wakeup";
    case trace_type::kCreate: return "create";
    case trace_type::kExit: return "exit";
    case trace_type::kSwitch: break;
  }
  return "?";
}

struct trace_request {
  std::vector<trace_event>* out;
  std::uint64_t* now;
  completion done;
};

void ipi_copy_trace(void* arg, std::intptr_t, void*, void* ctx) {
  auto* req = static_cast<trace_request*>(arg);
  auto* gd = static_cast<globaldata*>(ctx);
  *req->out = gd->gd_trace->copy();
  *req->now = cheap_clock();
  req->done.signal();
}

}  // namespace

std::string trace_json(const std::vector<std::vector<trace_event>>& per_worker,
                       std::uint64_t end_tsc) {
  std::uint64_t t0 = end_tsc;
  for (const auto& evs : per_worker) {
    if (!evs.empty()) t0 = std::min(t0, evs.front().tsc);
  }
  const double per_us = ticks_per_us();
  auto us = [&](std::uint64_t tsc) { return static_cast<double>(tsc - t0) / per_us; };
  std::string out = "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n";
  bool first = true;
  auto emit = [&](const std::string& ev) {
    if (!first) out += ",\n";
    first = false;
    out += ev;
  };
  emit("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{\"name\":\"lwkt runtime\"}}");
  for (std::size_t w = 0; w < per_worker.size(); ++w) {
    emit(absl::StrFormat("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%d,"
                         "\"args\":{\"name\":\"worker %d\"}}",
                         w, w));
    emit(absl::StrFormat("{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":1,\"tid\":%d,"
                         "\"args\":{\"sort_index\":%d}}",
                         w, w));
    const std::vector<trace_event>& evs = per_worker[w];
    for (std::size_t i = 0; i < evs.size(); ++i) {
      const trace_event& e = evs[i];
      if (e.type == trace_type::kSwitch) {
        // A running slice: from this switch-in to the worker's next switch (or the end).
        // The idle thread's are left out: gaps are idle time.
        std::uint64_t end = end_tsc;
        for (std::size_t j = i + 1; j < evs.size(); ++j) {
          if (evs[j].type == trace_type::kSwitch) {
            end = evs[j].tsc;
            break;
          }
        }
        if (e.b == 1) continue;  // the idle thread
        emit(absl::StrFormat("{\"name\":\"%s\",\"cat\":\"run\",\"ph\":\"X\",\"ts\":%.3f,"
                             "\"dur\":%.3f,\"pid\":1,\"tid\":%d,\"args\":{\"thread\":\"%p\","
                             "\"pri\":%d}}",
                             esc(e.name), us(e.tsc), us(end) - us(e.tsc), w, e.td, e.a));
        continue;
      }
      std::string args;
      switch (e.type) {
        case trace_type::kScheduleRemote:
          args = absl::StrFormat("\"thread\":\"%s\",\"to_worker\":%d", esc(e.name), e.a);
          break;
        case trace_type::kIpiSend:
          args = absl::StrFormat("\"to_worker\":%d", e.a);
          break;
        case trace_type::kIpiRecv:
          args = e.a < 0 ? std::string("\"from\":\"outside\"")
                         : absl::StrFormat("\"from_worker\":%d", e.a);
          break;
        case trace_type::kTokenContended:
          args = absl::StrFormat("\"token\":\"%s\",\"thread\":\"%p\"", esc(e.name), e.td);
          break;
        case trace_type::kSleep:
          args = absl::StrFormat("\"wmesg\":\"%s\",\"chan\":\"0x%x\",\"thread\":\"%p\"",
                                 esc(e.name), e.b, e.td);
          break;
        case trace_type::kWakeup:
          args = absl::StrFormat("\"chan\":\"0x%x\",\"by\":\"%p\"", e.b, e.td);
          break;
        default:
          args = absl::StrFormat("\"thread\":\"%s\",\"td\":\"%p\"", esc(e.name), e.td);
          break;
      }
      emit(absl::StrFormat("{\"name\":\"%s\",\"cat\":\"sched\",\"ph\":\"i\",\"s\":\"t\","
                           "\"ts\":%.3f,\"pid\":1,\"tid\":%d,\"args\":{%s}}",
                           instant_name(e.type), us(e.tsc), w, args));
    }
  }
  out += "\n]}\n";
  return out;
}

absl::Status write_file(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "we");
  if (!f) {
    return absl::InvalidArgumentError(
        absl::StrCat("lwkt trace: cannot open '", path, "': ", std::strerror(errno)));
  }
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const int err = errno;
  if (std::fclose(f) != 0 || !ok) {
    return absl::ResourceExhaustedError(
        absl::StrCat("lwkt trace: writing '", path, "' failed: ", std::strerror(ok ? errno : err)));
  }
  return absl::OkStatus();
}

// At shutdown (Options::trace_path), once the workers have stopped: the rings are read
// directly.
void write_trace_at_shutdown(runtime_state* rs) {
  if (rs->opts.trace_path.empty()) return;
  std::vector<std::vector<trace_event>> per;
  for (globaldata* gd : rs->gds) per.push_back(gd->gd_trace ? gd->gd_trace->copy() : std::vector<trace_event>{});
  if (absl::Status st = write_file(rs->opts.trace_path, trace_json(per, cheap_clock())); !st.ok()) {
    std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
  }
}

}  // namespace internal

absl::Status Runtime::write_trace(const std::string& path) {
  internal::runtime_state* rs = _s.get();
  internal::check_not_forked(rs, "Runtime::write_trace");
  if (rs->opts.trace_events == 0) {
    return absl::FailedPreconditionError(
        "Runtime::write_trace: tracing is off (Runtime::Options::trace_events is 0)");
  }
  std::vector<std::vector<internal::trace_event>> per(rs->gds.size());
  std::vector<std::uint64_t> now(rs->gds.size());
  {
    internal::api_guard g(rs);
    if (!g.ok()) {
      return absl::FailedPreconditionError(
          "Runtime::write_trace: the runtime is shutting down (Options::trace_path writes "
          "the trace at shutdown)");
    }
    std::vector<internal::trace_request> reqs(rs->gds.size());
    for (std::size_t i = 0; i < rs->gds.size(); ++i) {
      reqs[i].out = &per[i];
      reqs[i].now = &now[i];
      internal::send_ipi(rs->gds[i], internal::ipi_copy_trace, &reqs[i], 0, nullptr, false);
    }
    for (auto& r : reqs) r.done.wait();
  }
  std::uint64_t end = 0;
  for (std::uint64_t t : now) end = std::max(end, t);
  return internal::write_file(path, internal::trace_json(per, end));
}

}  // namespace lwkt
