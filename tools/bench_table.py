#!/usr/bin/env python3
"""Turns Google Benchmark JSON from //bench:lwkt_bench into the report table.

Each row compares one lwkt measurement with a peer measured in the same run, as a ratio
(lwkt / peer; below 1.0 means lwkt is faster), and says whether the issue's target holds.
With --benchmark_repetitions the median is used.
Usage: bench_table.py results.json [--markdown]
"""
import json
import sys

# (label, lwkt benchmark, peer benchmark, target ratio or None for informational rows)
ROWS = [
    ("raw switch, there and back", "BM_Switch_Raw", "BM_Peer_BoostContext_Jump", 1.0),
    ("raw switch, asymmetric code", "BM_Switch_Raw_Asymmetric", "BM_Peer_BoostContext_Jump", None),
    ("yield between two threads", "BM_Yield", "BM_Peer_BoostFiber_Yield", 0.5),
    ("create+run+exit+join", "BM_CreateExit_Join", "BM_Peer_BoostFiber_SpawnJoin", 0.5),
    ("create+run+exit (detached)", "BM_CreateExit_Detached", "BM_Peer_BoostFiber_SpawnJoin", None),
    ("create+run+exit+join vs OS thread", "BM_CreateExit_Join", "BM_Peer_StdThread_CreateJoin", None),
    ("runq enqueue+dequeue, 100,000 vs 10 queued", "BM_Runq_EnqueueDequeue/100000",
     "BM_Runq_EnqueueDequeue/10", 2.0),
    ("runq enqueue+dequeue, 1,000 vs 10 queued", "BM_Runq_EnqueueDequeue/1000",
     "BM_Runq_EnqueueDequeue/10", None),
    ("runq, 4 td_upri values, 100,000 vs 10", "BM_Runq_EnqueueDequeueMixedUpri/100000",
     "BM_Runq_EnqueueDequeueMixedUpri/10", None),
    ("cross-worker round trip, receiver polling", "BM_RoundTrip_Polling",
     "BM_Peer_AtomicPingPong", 2.0),
    ("cross-worker round trip, receiver parked", "BM_RoundTrip_Parked",
     "BM_Peer_CondvarPingPong", 0.5),
    ("cross-worker round trip, parked, vs Boost.Fiber", "BM_RoundTrip_Parked",
     "BM_Peer_BoostFiber_ChannelRoundTrip", None),
    ("IPI ring: one message (throughput, one pair)", "BM_IpiThroughput",
     "BM_Peer_AtomicPingPong", None),
    ("token get+release, uncontended, exclusive", "BM_Token_Uncontended_Exclusive",
     "BM_Peer_StdMutex_Uncontended", 1.0),
    ("token get+release, uncontended, shared", "BM_Token_Uncontended_Shared",
     "BM_Peer_StdMutex_Uncontended", None),
    ("token get+release, uncontended, vs absl::Mutex", "BM_Token_Uncontended_Exclusive",
     "BM_Peer_AbslMutex_Uncontended", None),
    ("token, two workers contending", "BM_Token_Contended_TwoWorkers",
     "BM_Peer_StdMutex_Contended", None),
    ("token, two workers contending, vs absl::Mutex", "BM_Token_Contended_TwoWorkers",
     "BM_Peer_AbslMutex_Contended", None),
    ("sleep/wakeup round trip, two workers", "BM_SleepWakeup_RoundTrip",
     "BM_Peer_CondvarSleepWakeup", 0.5),
    ("sleep/wakeup round trip vs Boost.Fiber", "BM_SleepWakeup_RoundTrip",
     "BM_Peer_BoostFiber_CondvarRoundTrip", None),
    ("yield holding 1 token each", "BM_Yield_HoldingTokens/1", "BM_Yield_HoldingTokens/0", None),
    ("yield holding 4 tokens each", "BM_Yield_HoldingTokens/4", "BM_Yield_HoldingTokens/0", None),
    ("yield holding 16 tokens each", "BM_Yield_HoldingTokens/16", "BM_Yield_HoldingTokens/0",
     None),
]


def short(name):
    for suffix in ("/real_time", "/iterations:2000"):
        name = name.replace(suffix, "")
    return name


def load(path):
    with open(path) as f:
        data = json.load(f)
    times = {}
    medians = {}
    for b in data["benchmarks"]:
        name = short(b.get("run_name", b["name"]))
        t = b["real_time"] if b.get("time_unit", "ns") == "ns" else None
        if t is None:
            scale = {"us": 1e3, "ms": 1e6, "s": 1e9}[b["time_unit"]]
            t = b["real_time"] * scale
        if b.get("aggregate_name") == "median":
            medians[name] = t
        elif b.get("run_type", "iteration") == "iteration":
            times.setdefault(name, t)
    times.update(medians)
    latency = {}
    for b in data["benchmarks"]:
        if "p50_ns" in b and b.get("aggregate_name", "median") == "median":
            latency[short(b.get("run_name", b["name"]))] = (b["p50_ns"], b["p99_ns"], b["p999_ns"])
    preempt = {}
    for b in data["benchmarks"]:
        if "to_first_insn_p50_ns" in b and b.get("aggregate_name", "median") == "median":
            preempt = {"p50": b["to_first_insn_p50_ns"], "p99": b["to_first_insn_p99_ns"]}
    return data.get("context", {}), times, latency, preempt


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    ctx, t, latency, counters = load(sys.argv[1])
    out = []
    out.append("lwkt benchmark report (%s, %s CPUs at %s MHz; lower is better)" %
               (ctx.get("date", "?"), ctx.get("num_cpus", "?"), ctx.get("mhz_per_cpu", "?")))
    out.append("")
    out.append("| measurement | lwkt ns | peer | peer ns | ratio | target | met |")
    out.append("|---|---:|---|---:|---:|---:|---|")
    missing = False
    for label, ours, peer, target in ROWS:
        if ours not in t or peer not in t:
            out.append("| %s | - | %s | - | - | - | not measured |" % (label, peer))
            missing = True
            continue
        ratio = t[ours] / t[peer]
        met = "-" if target is None else ("yes" if ratio <= target else "NO")
        out.append("| %s | %.1f | %s | %.1f | %.2fx | %s | %s |" % (
            label, t[ours], peer.replace("BM_Peer_", "").replace("BM_", ""), t[peer], ratio,
            "<= %.1fx" % target if target else "info", met))
    if "BM_Preempt_Local" in t:
        out.append("")
        out.append("local preemption: schedule -> preemptor and back %.1f ns per round; "
                   "schedule -> preemptor's first instruction p50 %.0f ns, p99 %.0f ns "
                   "(target <= 100 ns: %s)" % (
                       t["BM_Preempt_Local"], counters.get("p50", 0), counters.get("p99", 0),
                       "yes" if counters.get("p50", 1e9) <= 100 else "NO"))
    if latency:
        out.append("")
        out.append("| latency | p50 ns | p99 ns | p99.9 ns |")
        out.append("|---|---:|---:|---:|")
        for name, (p50, p99, p999) in sorted(latency.items()):
            label = (name.replace("BM_WakeLatency_", "parked worker woken by IPI, kick: ")
                     .replace("BM_WakeupToRun_", "wakeup -> sleeper runs, "))
            out.append("| %s | %.0f | %.0f | %.0f |" % (label, p50, p99, p999))
    out.append("")
    out.append("All results (ns per iteration, real time):")
    for name in sorted(t):
        out.append("  %-45s %12.1f" % (name, t[name]))
    print("\n".join(out))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
