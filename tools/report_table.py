#!/usr/bin/env python3
"""The report's table: each lwkt figure beside a peer measured in the same run.

A row is a ratio (lwkt / peer; below 1.0 means lwkt is faster) with the issue's target.
Every figure is the median of Google Benchmark repetitions; its spread is the coefficient of
variation (stddev / mean) over the repetitions. A ratio whose inputs spread over 10% is
marked "unstable". Cross-worker rows also carry the mode(s) of the atomic ping-pong floor
measured in the same run (tools/report's latency_matrix), since that floor is bimodal on
some VMs and moves every ratio against it.

As a program: report_table.py run.json  (a results/<date>-<machine>.json file).
"""
import json
import sys

UNSTABLE_CV = 0.10

# (label, lwkt benchmark, peer benchmark, target ratio or None, cross-worker?)
ROWS = [
    ("raw switch, there and back", "BM_Switch_Raw", "BM_Peer_BoostContext_Jump", 1.0, False),
    ("raw switch, asymmetric code", "BM_Switch_Raw_Asymmetric", "BM_Peer_BoostContext_Jump",
     None, False),
    ("raw switch, MXCSR compared first (the Intel choice)", "BM_Switch_Raw_MxcsrMode/0",
     "BM_Peer_BoostContext_Jump", None, False),
    ("raw switch, MXCSR reloaded every switch (the AMD choice)", "BM_Switch_Raw_MxcsrMode/1",
     "BM_Peer_BoostContext_Jump", None, False),
    ("yield between two threads", "BM_Yield", "BM_Peer_BoostFiber_Yield", 0.5, False),
    ("yield, stall detector on (default) vs off", "BM_Yield", "BM_Yield_StallDetectorOff",
     1.01, False),
    ("yield, tracing on vs off (default)", "BM_Yield_Traced", "BM_Yield", None, False),
    ("create+run+exit+join", "BM_CreateExit_Join", "BM_Peer_BoostFiber_SpawnJoin", 0.5, False),
    ("create+run+exit (detached)", "BM_CreateExit_Detached", "BM_Peer_BoostFiber_SpawnJoin",
     None, False),
    ("create+run+exit+join vs OS thread", "BM_CreateExit_Join", "BM_Peer_StdThread_CreateJoin",
     None, False),
    ("runq enqueue+dequeue, 100,000 vs 10 queued", "BM_Runq_EnqueueDequeue/100000",
     "BM_Runq_EnqueueDequeue/10", 2.0, False),
    ("runq enqueue+dequeue, 1,000 vs 10 queued", "BM_Runq_EnqueueDequeue/1000",
     "BM_Runq_EnqueueDequeue/10", None, False),
    ("runq, 4 td_upri values, 100,000 vs 10", "BM_Runq_EnqueueDequeueMixedUpri/100000",
     "BM_Runq_EnqueueDequeueMixedUpri/10", None, False),
    ("cross-worker round trip, receiver polling", "BM_RoundTrip_Polling",
     "BM_Peer_AtomicPingPong", 2.0, True),
    ("cross-worker round trip, the ring alone (handlers bounce)", "BM_RoundTrip_IpiOnly",
     "BM_Peer_AtomicPingPong", 2.0, True),
    ("cross-worker round trip, receiver parked", "BM_RoundTrip_Parked",
     "BM_Peer_CondvarPingPong", 0.5, True),
    ("cross-worker round trip, parked, vs Boost.Fiber", "BM_RoundTrip_Parked",
     "BM_Peer_BoostFiber_ChannelRoundTrip", None, True),
    ("IPI ring: one message (throughput, one pair)", "BM_IpiThroughput",
     "BM_Peer_AtomicPingPong", None, True),
    ("token get+release, uncontended, exclusive", "BM_Token_Uncontended_Exclusive",
     "BM_Peer_StdMutex_Uncontended", 1.0, False),
    ("token get+release, uncontended, shared", "BM_Token_Uncontended_Shared",
     "BM_Peer_StdMutex_Uncontended", None, False),
    ("token get+release, uncontended, vs absl::Mutex", "BM_Token_Uncontended_Exclusive",
     "BM_Peer_AbslMutex_Uncontended", None, False),
    ("token, two workers contending", "BM_Token_Contended_TwoWorkers",
     "BM_Peer_StdMutex_Contended", None, True),
    ("token, two workers contending, vs absl::Mutex", "BM_Token_Contended_TwoWorkers",
     "BM_Peer_AbslMutex_Contended", None, True),
    ("sleep/wakeup round trip, two workers", "BM_SleepWakeup_RoundTrip",
     "BM_Peer_CondvarSleepWakeup", 0.5, True),
    ("sleep/wakeup round trip vs Boost.Fiber", "BM_SleepWakeup_RoundTrip",
     "BM_Peer_BoostFiber_CondvarRoundTrip", None, True),
    ("TCP echo round trip, 1 connection, vs an epoll loop", "BM_Echo_Lwkt/1",
     "BM_Echo_Epoll/1", 1.0, False),
    ("TCP echo round trip, 64 connections, vs an epoll loop", "BM_Echo_Lwkt/64",
     "BM_Echo_Epoll/64", 1.0, False),
    ("TCP echo, 1 connection, idle_spin 0, vs an epoll loop", "BM_Echo_LwktNoSpin/1",
     "BM_Echo_Epoll/1", None, False),
    ("TCP echo, 64 connections, idle_spin 0, vs an epoll loop", "BM_Echo_LwktNoSpin/64",
     "BM_Echo_Epoll/64", None, False),
    ("TCP echo round trip, 64 connections, vs Boost.Asio", "BM_Echo_Lwkt/64",
     "BM_Echo_Asio/64", None, False),
    ("TCP echo, 64 connections, lwkt io_uring vs lwkt epoll", "BM_Echo_Lwkt/64",
     "BM_Echo_LwktEpoll/64", None, False),
    ("I/O operation, 32 threads batching vs 1", "BM_IoSubmit_Batched", "BM_IoSubmit_Single",
     None, False),
    ("I/O operation with a deadline (timer heap) vs none", "BM_IoSubmit_SingleDeadline",
     "BM_IoSubmit_Single", None, False),
    ("bare ring: poll with a linked timeout vs none", "BM_IoRaw_PollLinkedTimeout",
     "BM_IoRaw_Poll", None, False),
    ("yield holding 1 token each", "BM_Yield_HoldingTokens/1", "BM_Yield_HoldingTokens/0",
     None, False),
    ("yield holding 4 tokens each", "BM_Yield_HoldingTokens/4", "BM_Yield_HoldingTokens/0",
     None, False),
    ("yield holding 16 tokens each", "BM_Yield_HoldingTokens/16", "BM_Yield_HoldingTokens/0",
     None, False),
]

_SCALE = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def short(name):
    for suffix in ("/real_time", "/iterations:2000"):
        name = name.replace(suffix, "")
    return name


class Figures:
    """Median time (ns), spread (cv) and counters per benchmark, from Google Benchmark JSON
    entries (with or without repetitions)."""

    def __init__(self, benchmarks):
        self.ns, self.cv, self.counters = {}, {}, {}
        mean, stddev = {}, {}
        self.errors = {}
        for b in benchmarks:
            name = short(b.get("run_name", b["name"]))
            if b.get("error_occurred"):
                # Google Benchmark writes a failed run as a plain entry with a meaningless
                # time: it is a missing figure, with the benchmark's own reason.
                self.errors[name] = b.get("error_message", "error")
                continue
            kind = b.get("aggregate_name")
            t = b.get("real_time", 0.0) * _SCALE[b.get("time_unit", "ns")]
            if kind == "median":
                self.ns[name] = t
                self.counters[name] = b
            elif kind == "mean":
                mean[name] = t
            elif kind == "stddev":
                stddev[name] = t
            elif kind == "cv":
                # Google Benchmark stores the cv as a fraction in real_time, unscaled.
                self.cv[name] = b.get("real_time", 0.0)
            elif kind is None and b.get("run_type", "iteration") == "iteration":
                self.ns.setdefault(name, t)
                self.counters.setdefault(name, b)
        for name, m in mean.items():
            if name not in self.cv and name in stddev and m > 0:
                self.cv[name] = stddev[name] / m

    def has(self, name):
        return name in self.ns

    def spread(self, name):
        return self.cv.get(name)


def floor_note(matrix):
    """'109 ns (40%) / 140 ns (41%)' from latency_matrix's floor_modes, and the same-phase
    lwkt / floor ratio of the pair (0, 1) from its matrix (samples alternate there, so
    that ratio is immune to the host's latency phases, unlike a ratio of two benchmarks
    that ran at different times)."""
    if not matrix or not matrix.get("floor_modes"):
        return "-"
    note = " / ".join("%.0f ns (%.0f%%)" % (m["ns"], 100 * m["share"])
                      for m in matrix["floor_modes"])
    for c in matrix.get("matrix", []):
        if c["a"] == 0 and c["b"] == 1 and c["lwkt_ns"] and c["atomic_ns"]:
            note += "; matrix 0->1: lwkt %.2fx floor" % (c["lwkt_ns"] / c["atomic_ns"])
    return note


def pct(cv):
    return "-" if cv is None else "%.1f%%" % (100 * cv)


def rows(fig, skipped=None):
    """Yields dicts, one per ROWS entry, with the figures or the reason it is missing
    (`skipped`: why a benchmark may legitimately be absent, e.g. "not in --quick")."""
    for label, ours, peer, target, cross in ROWS:
        r = {"label": label, "lwkt": ours, "peer": peer, "target": target, "cross": cross}
        if not fig.has(ours) or not fig.has(peer) or fig.ns[peer] <= 0:
            r["missing"] = "%s (%s)" % (skipped or "not measured in this run", ", ".join(
                n + (": " + fig.errors[n] if n in fig.errors else "")
                for n in (ours, peer) if not fig.has(n) or fig.ns[n] <= 0))
            yield r
            continue
        r["lwkt_ns"], r["peer_ns"] = fig.ns[ours], fig.ns[peer]
        r["lwkt_cv"], r["peer_cv"] = fig.spread(ours), fig.spread(peer)
        r["ratio"] = r["lwkt_ns"] / r["peer_ns"]
        r["unstable"] = any(c is not None and c > UNSTABLE_CV for c in (r["lwkt_cv"], r["peer_cv"]))
        r["met"] = None if target is None else r["ratio"] <= target
        yield r


def markdown(table_rows, matrix):
    floor = floor_note(matrix)
    out = ["| measurement | lwkt ns | spread | peer | peer ns | spread | ratio | target | met |"
           " floor mode |",
           "|---|---:|---:|---|---:|---:|---:|---:|---|---|"]
    for r in table_rows:
        peer = r["peer"].replace("BM_Peer_", "").replace("BM_", "")
        if "missing" in r:
            out.append("| %s | - | - | %s | - | - | - | - | %s | - |" % (r["label"], peer,
                                                                        r["missing"]))
            continue
        ratio = "%.2fx" % r["ratio"] + (" unstable" if r["unstable"] else "")
        target = "info" if r["target"] is None else "<= %.1fx" % r["target"]
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        out.append("| %s | %.1f | %s | %s | %.1f | %s | %s | %s | %s | %s |" % (
            r["label"], r["lwkt_ns"], pct(r["lwkt_cv"]), peer, r["peer_ns"], pct(r["peer_cv"]),
            ratio, target, met, floor if r["cross"] else "-"))
    return out


def latency_lines(fig):
    """The percentile rows of the latency benchmarks (counters p50_ns/p99_ns/p999_ns)."""
    out = []
    for name in sorted(fig.counters):
        b = fig.counters[name]
        if "p999_ns" not in b:  # the percentile benchmarks (BM_IdlePolicy has its own table)
            continue
        label = (name.replace("BM_WakeLatency_", "parked worker woken by IPI, kick: ")
                 .replace("BM_WakeupToRun_", "wakeup -> sleeper runs, "))
        out.append("| %s | %.0f | %.0f | %.0f |" % (label, b["p50_ns"], b["p99_ns"],
                                                   b["p999_ns"]))
    if out:
        out = ["| latency | p50 ns | p99 ns | p99.9 ns |", "|---|---:|---:|---:|"] + out
    return out


ECHO_SERVERS = [("BM_Echo_Lwkt", "lwkt, io_uring (default idle_spin 50 us)"),
                ("BM_Echo_LwktNoSpin", "lwkt, io_uring, idle_spin 0"),
                ("BM_Echo_LwktEpoll", "lwkt, epoll backend"),
                ("BM_Echo_Epoll", "single-threaded epoll loop"),
                ("BM_Echo_Asio", "Boost.Asio, one thread")]


def echo_lines(fig):
    """BM_Echo_*/<conns>: requests/s, latency, and the server's CPU per round trip (the
    client is shared and may be what limits throughput; CPU per request compares servers)."""
    out = []
    for conns in (1, 64):
        for prefix, label in ECHO_SERVERS:
            name = "%s/%d" % (prefix, conns)
            b = fig.counters.get(name)
            if not b or "items_per_second" not in b:
                continue
            lat = ("%.1f / %.1f" % (b["p50_us"], b["p99_us"])) if "p50_us" in b else "-"
            out.append("| %d | %s | %.0f | %.0f | %s | %.0f |" % (
                conns, label, b["items_per_second"], fig.ns[name], lat,
                b.get("server_cpu_ns", 0)))
    if out:
        out = ["TCP echo over loopback (64-byte messages, one outstanding per connection; server "
               "on CPU 0, the same epoll client on CPU 1; server CPU = the server thread's CPU "
               "time per round trip, spinning included):", "",
               "| connections | server | round trips/s | ns per round trip | p50 / p99 us |"
               " server CPU ns per round trip |", "|---:|---|---:|---:|---|---:|"] + out
    return out


def memory_lines(fig):
    """BM_RuntimeMemory/N: resident memory a Runtime adds, with rings allocated on first use."""
    out = []
    for name in sorted(fig.counters, key=lambda n: int(n.split("/")[1]) if "/" in n else 0):
        b = fig.counters[name]
        if not name.startswith("BM_RuntimeMemory/") or "rss_started_kib" not in b:
            continue
        out.append("| %s | %.0f | %.0f | %d | %.0f |" % (
            name.split("/")[1], b["rss_started_kib"] / 1024, b["rss_neighbours_kib"] / 1024,
            b["rings"], b["eager_rings_kib"] / 1024))
    if out:
        out = ["Memory: resident set a Runtime adds (MiB), once started and once each worker "
               "has sent one message to its neighbour; IPI rings are allocated on a pair's "
               "first message, on the receiver's NUMA node. The last column is what "
               "allocating all N^2 rings at start-up (the previous design) reserved.", "",
               "| workers | started MiB | after neighbour messages MiB | rings | all N^2 rings "
               "MiB |", "|---:|---:|---:|---:|---:|"] + out
    return out


POLL_FOREVER_US = 1000000  # bench/idle_bench.cc: idle_spin 1 s, i.e. never parks


def idle_policy_points(fig):
    """{rate: {spin_us: (p50_ns, p99_ns, cpu)}} from BM_IdlePolicy/<spin_us>/<rate>."""
    pts = {}
    for name, b in fig.counters.items():
        parts = name.split("/")
        if parts[0] != "BM_IdlePolicy" or len(parts) < 3 or "p50_ns" not in b:
            continue
        pts.setdefault(int(parts[2]), {})[int(parts[1])] = (b["p50_ns"], b["p99_ns"], b["cpu"])
    return pts


def policy_label(spin_us):
    if spin_us >= POLL_FOREVER_US:
        return "poll"
    if spin_us < 0:
        return "adaptive %d%%" % -spin_us
    return "park at once" if spin_us == 0 else ("spin %d us" % spin_us if spin_us < 1000
                                                else "spin %g ms" % (spin_us / 1000.0))


def idle_policy_lines(fig):
    pts = idle_policy_points(fig)
    if not pts:
        return []
    policies = sorted({p for r in pts.values() for p in r}, key=lambda p: (p < 0, p))
    out = ["Idle policy: messages arriving at one worker at a fixed rate with exponential gaps "
           "(open loop; latency from the intended send time). Each cell: p50 / p99 delivery "
           "latency (us) and the receiving worker's CPU seconds per second.", "",
           "| rate /s | " + " | ".join(policy_label(p) for p in policies) + " |",
           "|---:|" + "---|" * len(policies)]
    for rate in sorted(pts):
        cells = []
        for p in policies:
            v = pts[rate].get(p)
            cells.append("%.1f / %.0f us, %.0f%%" % (v[0] / 1e3, v[1] / 1e3, v[2] * 100)
                         if v else "-")
        out.append("| %d | %s |" % (rate, " | ".join(cells)))
    return out


def preempt_line(fig):
    b = fig.counters.get("BM_Preempt_Local")
    if not b or "to_first_insn_p50_ns" not in b:
        return []
    return ["local preemption: schedule -> preemptor and back %.1f ns per round; schedule -> "
            "preemptor's first instruction p50 %.0f ns, p99 %.0f ns (target <= 100 ns: %s)" % (
                fig.ns["BM_Preempt_Local"], b["to_first_insn_p50_ns"], b["to_first_insn_p99_ns"],
                "yes" if b["to_first_insn_p50_ns"] <= 100 else "NO")]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    fig = Figures(doc["benchmarks"])
    print("\n".join(markdown(list(rows(fig)), doc.get("matrix")) + [""] + latency_lines(fig)))


if __name__ == "__main__":
    main()
