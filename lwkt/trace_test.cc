// Trace export (Runtime::Options::trace_events, trace_path, Runtime::write_trace), from
// runtime.h's contract: a known cross-worker sequence (sleep on worker 0, a wakeup from
// worker 1, the message reaching worker 0, the sleeper running again) appears in timestamp
// order on the right workers with the right threads; the ring keeps the last N events; the
// trace at shutdown; errors for tracing off, a bad path and bad options.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "lwkt/runtime.h"
#include "lwkt/sched.h"
#include "lwkt/sleep.h"
#include "lwkt/testing.h"

namespace lwkt {
namespace {

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One trace event (the writer puts one per line); only the fields the tests look at.
struct ev {
  std::string name, ph;
  double ts = 0, dur = 0;
  int tid = -1;
  std::string line;
};

// The value of "key": a string (unescaped only as far as the tests need: \" and \\) or
// a number.
std::optional<std::string> field(const std::string& line, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  const std::size_t at = line.find(k);
  if (at == std::string::npos) return std::nullopt;
  std::size_t i = at + k.size();
  std::string v;
  if (i < line.size() && line[i] == '"') {
    for (++i; i < line.size() && line[i] != '"'; ++i) {
      if (line[i] == '\\' && i + 1 < line.size()) ++i;
      v += line[i];
    }
    return v;
  }
  while (i < line.size() && (std::isdigit(static_cast<unsigned char>(line[i])) || line[i] == '.' || line[i] == '-')) {
    v += line[i++];
  }
  return v;
}

// Parses the file: checks its frame ({"displayTimeUnit":...,"traceEvents":[ ... ]}) and
// that every event line is one object with balanced braces.
std::vector<ev> parse(const std::string& text) {
  std::vector<ev> out;
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[");
  bool closed = false;
  while (std::getline(in, line)) {
    if (line == "]}") {
      closed = true;
      continue;
    }
    EXPECT_FALSE(closed) << "text after the end: " << line;
    if (!line.empty() && line.back() == ',') line.pop_back();
    EXPECT_EQ(line.front(), '{') << line;
    EXPECT_EQ(line.back(), '}') << line;
    EXPECT_EQ(std::count(line.begin(), line.end(), '{'), std::count(line.begin(), line.end(), '}'))
        << line;
    ev e;
    e.line = line;
    e.name = field(line, "name").value_or("");
    e.ph = field(line, "ph").value_or("");
    e.ts = std::stod(field(line, "ts").value_or("0"));
    e.dur = std::stod(field(line, "dur").value_or("0"));
    e.tid = std::stoi(field(line, "tid").value_or("-1"));
    out.push_back(e);
  }
  EXPECT_TRUE(closed) << "no closing ]}";
  return out;
}

std::string temp(const char* name) { return ::testing::TempDir() + "/" + name; }

TEST(Trace, AWakeupAcrossWorkersAppearsInOrderWithTheRightThreads) {
  auto rt = Runtime::create({.workers = 2, .trace_events = 4096});
  ASSERT_TRUE(rt.ok()) << rt.status();
  int chan;
  std::atomic<int> phase{0};
  auto sleeper = (*rt)->spawn(
      [&] {
        phase.store(1);
        while (phase.load() < 2) (void)tsleep(&chan, 0, "tr-wait");
      },
      {.name = "tr-sleeper", .worker = 0});
  ASSERT_TRUE(sleeper.ok());
  auto waker = (*rt)->spawn(
      [&] {
        while (phase.load() < 1) yield();
        // Asleep for certain, so the trace must show the sleep, then the wakeup.
        testing::wait_until_asleep(**rt, "tr-sleeper");
        phase.store(2);
        wakeup(&chan);
      },
      {.name = "tr-waker", .worker = 1});
  ASSERT_TRUE(waker.ok());
  sleeper->join();
  waker->join();
  const std::string path = temp("wakeup.json");
  ASSERT_TRUE((*rt)->write_trace(path).ok());
  const std::vector<ev> evs = parse(read(path));
  ASSERT_FALSE(evs.empty());

  auto find = [&](double after, auto pred) -> const ev* {
    const ev* best = nullptr;
    for (const ev& e : evs) {
      if (e.ts >= after && pred(e) && (!best || e.ts < best->ts)) best = &e;
    }
    return best;
  };
  // 1. The sleeper runs on worker 0 and goes to sleep there, on "tr-wait".
  const ev* ran = find(0, [](const ev& e) { return e.ph == "X" && e.name == "tr-sleeper" && e.tid == 0; });
  ASSERT_NE(ran, nullptr);
  const ev* slept = find(ran->ts, [](const ev& e) {
    return e.name == "tsleep" && e.tid == 0 && field(e.line, "wmesg") == "tr-wait";
  });
  ASSERT_NE(slept, nullptr);
  // 2. The waker, on worker 1, runs and wakes the channel, after the sleep began.
  const ev* woke = find(slept->ts, [](const ev& e) { return e.name == "wakeup" && e.tid == 1; });
  ASSERT_NE(woke, nullptr);
  const ev* waker_ran = find(0, [&](const ev& e) {
    return e.ph == "X" && e.name == "tr-waker" && e.tid == 1 && e.ts <= woke->ts &&
           woke->ts <= e.ts + e.dur + 0.001;
  });
  EXPECT_NE(waker_ran, nullptr) << "the wakeup falls inside a running slice of tr-waker";
  const ev* sent = find(woke->ts, [](const ev& e) {
    return e.name == "ipi send" && e.tid == 1 && field(e.line, "to_worker") == "0";
  });
  ASSERT_NE(sent, nullptr);
  // 3. Worker 0 drains worker 1's ring, makes the sleeper runnable, and runs it again.
  // "ipi recv" marks the start of a drain of one ring, which takes every message there,
  // including ones pushed while it runs: the drain that ran the wakeup may have begun
  // before the wakeup was sent (when worker 0 was still draining an earlier message of
  // worker 1's, such as the last snapshot request), so it is the last drain of that ring
  // to begin before the sleeper was woken.
  const ev* woken = find(woke->ts, [](const ev& e) {
    return e.name == "woken" && e.tid == 0 && field(e.line, "thread") == "tr-sleeper";
  });
  ASSERT_NE(woken, nullptr);
  const ev* recv = nullptr;
  for (const ev& e : evs) {
    if (e.name == "ipi recv" && e.tid == 0 && field(e.line, "from_worker") == "1" &&
        e.ts <= woken->ts && (!recv || e.ts > recv->ts)) {
      recv = &e;
    }
  }
  ASSERT_NE(recv, nullptr);
  const ev* again = find(woken->ts, [](const ev& e) { return e.ph == "X" && e.name == "tr-sleeper" && e.tid == 0; });
  ASSERT_NE(again, nullptr);
  const ev* exited = find(again->ts, [](const ev& e) {
    return e.name == "exit" && e.tid == 0 && field(e.line, "thread") == "tr-sleeper";
  });
  EXPECT_NE(exited, nullptr);
  // Worker names for the viewer.
  EXPECT_NE(read(path).find("\"args\":{\"name\":\"worker 1\"}"), std::string::npos);
  ASSERT_TRUE((*rt)->shutdown().ok());
}

TEST(Trace, TheRingKeepsTheLastEvents) {
  constexpr std::size_t kRing = 64;
  auto rt = Runtime::create({.workers = 1, .rr_slice = absl::ZeroDuration(), .trace_events = kRing});
  ASSERT_TRUE(rt.ok()) << rt.status();
  auto body = [] {
    for (int i = 0; i < 5000; ++i) yield();
  };
  auto a = (*rt)->spawn(body, {.name = "tr-a"});
  auto b = (*rt)->spawn(body, {.name = "tr-b"});
  ASSERT_TRUE(a.ok() && b.ok());
  a->join();
  b->join();
  auto last = (*rt)->spawn([] {}, {.name = "tr-last"});
  ASSERT_TRUE(last.ok());
  last->join();
  const std::string path = temp("ring.json");
  ASSERT_TRUE((*rt)->write_trace(path).ok());
  const std::vector<ev> evs = parse(read(path));
  int recorded = 0, switches_to_a = 0;
  bool last_exit = false;
  for (const ev& e : evs) {
    if (e.ph == "M") continue;
    ++recorded;
    if (e.ph == "X" && e.name == "tr-a") ++switches_to_a;
    if (e.name == "exit" && field(e.line, "thread") == "tr-last") last_exit = true;
  }
  // Idle slices are not rendered, so at most the ring's size.
  EXPECT_LE(recorded, static_cast<int>(kRing));
  EXPECT_GT(recorded, 0);
  EXPECT_TRUE(last_exit) << "the newest events are the ones kept";
  EXPECT_LT(switches_to_a, 64) << "10,000 yields' events do not all fit: the oldest went";
  ASSERT_TRUE((*rt)->shutdown().ok());
}

TEST(Trace, TracePathIsWrittenAtShutdown) {
  const std::string path = temp("shutdown.json");
  std::remove(path.c_str());
  auto rt = Runtime::create({.workers = 2, .trace_events = 1024, .trace_path = path});
  ASSERT_TRUE(rt.ok()) << rt.status();
  auto td = (*rt)->spawn([] { yield(); }, {.name = "tr-at-shutdown", .worker = 1});
  ASSERT_TRUE(td.ok());
  td->join();
  ASSERT_TRUE((*rt)->shutdown().ok());
  const std::vector<ev> evs = parse(read(path));
  EXPECT_TRUE(std::any_of(evs.begin(), evs.end(), [](const ev& e) {
    return e.ph == "X" && e.name == "tr-at-shutdown" && e.tid == 1;
  }));
  // After shutdown, on demand is refused and says where the trace went.
  absl::Status st = (*rt)->write_trace(temp("late.json"));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("trace_path"), absl::string_view::npos) << st;
}

// A long wait message is cut to fit its event, never inside a UTF-8 sequence.
TEST(Trace, LongNamesAreCutBetweenUtf8Characters) {
  auto rt = Runtime::create({.workers = 1, .trace_events = 64});
  ASSERT_TRUE(rt.ok());
  static const char kWmesg[] = "\xc3\xb1\xc3\xb1\xc3\xb1\xc3\xb1\xc3\xb1\xc3\xb1\xc3\xb1\xc3\xb1"
                               "\xc3\xb1\xc3\xb1\xc3\xb1\xc3\xb1\xc3\xb1\xc3\xb1\xc3\xb1\xc3\xb1"
                               "\xc3\xb1\xc3\xb1";  // 18 x U+00F1, 36 bytes
  auto td = (*rt)->spawn([] {
    static int chan;
    (void)tsleep(&chan, 0, kWmesg, absl::Microseconds(100));
  });
  ASSERT_TRUE(td.ok());
  td->join();
  const std::string path = temp("utf8.json");
  ASSERT_TRUE((*rt)->write_trace(path).ok());
  bool found = false;
  for (const ev& e : parse(read(path))) {
    if (e.name != "tsleep") continue;
    found = true;
    const std::string w = field(e.line, "wmesg").value_or("");
    EXPECT_EQ(w.size(), 30u) << "15 whole characters fit in the 31 bytes";
    EXPECT_EQ(w, std::string(kWmesg, 30));
  }
  EXPECT_TRUE(found);
  ASSERT_TRUE((*rt)->shutdown().ok());
}

TEST(Trace, OffByDefaultAndBadInputIsAnError) {
  auto rt = Runtime::create({.workers = 1});
  ASSERT_TRUE(rt.ok());
  absl::Status st = (*rt)->write_trace(temp("off.json"));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("trace_events"), absl::string_view::npos) << st;
  auto on = Runtime::create({.workers = 1, .trace_events = 16});
  ASSERT_TRUE(on.ok());
  st = (*on)->write_trace("/nonexistent-dir/x.json");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("/nonexistent-dir/x.json"), absl::string_view::npos) << st;

  auto big = Runtime::create({.trace_events = Runtime::kMaxTraceEvents + 1});
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("trace_events"), absl::string_view::npos);
  auto path_only = Runtime::create({.trace_path = temp("never.json")});
  ASSERT_FALSE(path_only.ok());
  EXPECT_NE(path_only.status().message().find("trace_path"), absl::string_view::npos);
}

TEST(Trace, FromAnLwktThreadAndNamesAreEscaped) {
  auto rt = Runtime::create({.workers = 2, .trace_events = 256});
  ASSERT_TRUE(rt.ok());
  const std::string path = temp("from-lwkt.json");
  absl::Status st;
  auto td = (*rt)->spawn([&] { st = (*rt)->write_trace(path); }, {.name = "quote\"back\\slash"});
  ASSERT_TRUE(td.ok());
  td->join();
  ASSERT_TRUE(st.ok()) << st;
  const std::string text = read(path);
  parse(text);
  EXPECT_NE(text.find("quote\\\"back\\\\slash"), std::string::npos);
  bool found = false;
  for (const ev& e : parse(text)) found = found || (e.ph == "X" && e.name == "quote\"back\\slash");
  EXPECT_TRUE(found) << "the escaped name reads back as given";
  ASSERT_TRUE((*rt)->shutdown().ok());
}

}  // namespace
}  // namespace lwkt
