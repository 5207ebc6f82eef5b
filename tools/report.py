#!/usr/bin/env python3
"""The benchmark report (README command 1; run through tools/report, which builds first).

Runs //bench:lwkt_bench one benchmark group at a time (a progress line per group), then
//bench:latency_matrix, and writes into results/:
  <date>-<machine>.json   Google Benchmark JSON (every group's entries) + the machine block
                          + the matrix document + group timings
  <date>-<machine>.md     machine block, the table (lwkt, peer, ratio, target, met, spread,
                          floor mode), latency percentiles, charts, what is missing and why
  <date>-<machine>-*.png  the charts (gnuplot)
<machine> names the CPU model and PU count; results/ keeps the latest full run of each
machine (older runs of the same machine are removed). --quick runs a one-minute subset into
results/quick/ (not kept in git). A group that fails or overruns is reported as missing;
the report itself still completes.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report_charts  # noqa: E402
import report_http  # noqa: E402
import report_machine  # noqa: E402
import report_table  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (group, Google Benchmark filter, in --quick)
GROUPS = [
    ("context switch", r"^BM_(Switch_Raw|Peer_BoostContext_Jump)", True),
    ("yield", r"^BM_(Yield|Yield_StallDetectorOff|Yield_Traced|Peer_BoostFiber_Yield)(/|$)",
     True),
    ("create and exit", r"^BM_(CreateExit_|Peer_BoostFiber_SpawnJoin|Peer_StdThread_CreateJoin)",
     True),
    ("run queue", r"^BM_Runq_", True),
    ("cross-worker round trip",
     r"^BM_(RoundTrip_|Peer_AtomicPingPong|Peer_CondvarPingPong|Peer_BoostFiber_Channel|"
     r"IpiThroughput)", True),
    ("wake latency", r"^BM_WakeLatency_", True),
    ("tokens", r"^BM_(Token_|Peer_StdMutex_|Peer_AbslMutex_|Yield_HoldingTokens)", True),
    ("runtime memory", r"^BM_RuntimeMemory/", True),
    ("idle policy", r"^BM_IdlePolicy/", True),
    ("message ports", r"^BM_(Msgport_|Peer_CondvarPingPong|Peer_BoostFiber_Channel)", True),
    ("I/O: echo and submit", r"^BM_(Echo_|IoSubmit_|IoRaw_)", True),
    ("sleep/wakeup and preemption",
     r"^BM_(SleepWakeup_|Peer_CondvarSleepWakeup|Peer_BoostFiber_CondvarRoundTrip|WakeupToRun_|"
     r"Preempt_)", True),
]
README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"


def progress_start(i, n, name):
    print("[%2d/%d] %-30s" % (i, n, name), end="", file=sys.stderr, flush=True)


def progress(secs, note=""):
    print(" %6.1f s%s" % (secs, ("  " + note) if note else ""), file=sys.stderr, flush=True)


def list_benchmarks(binary):
    """Returns (names, error)."""
    try:
        p = subprocess.run([binary, "--benchmark_list_tests=true"], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], "cannot list the benchmarks of %s: %s" % (binary, e)
    if p.returncode != 0:
        return [], "%s --benchmark_list_tests: exit %d" % (binary, p.returncode)
    return [l.strip() for l in p.stdout.splitlines() if l.strip()], None


def steal_seconds():
    """CPU time the hypervisor gave to others while this VM's vCPUs wanted to run
    (/proc/stat, all CPUs: the 8th value of the cpu line, in USER_HZ ticks); None if absent."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_group(binary, flt, args, timeout):
    """Returns (benchmarks, context, error)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        path = tmp.name
    argv = [binary, "--benchmark_filter=" + flt, "--benchmark_out=" + path,
            "--benchmark_out_format=json", "--benchmark_repetitions=%d" % args.repetitions,
            "--benchmark_report_aggregates_only=true"]
    if args.min_time:
        argv.append("--benchmark_min_time=%g" % args.min_time)
    try:
        p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
        err = None if p.returncode == 0 else "exit %d: %s" % (
            p.returncode, (p.stderr.strip().splitlines() or ["?"])[-1])
    except subprocess.TimeoutExpired:
        err = "did not finish within %d s" % timeout
    except OSError as e:
        err = "cannot run %s: %s" % (binary, e)
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        doc = {}
    os.unlink(path)
    return doc.get("benchmarks", []), doc.get("context", {}), err


def run_matrix(binary, args, timeout):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        path = tmp.name
    argv = [binary, "--out=" + path]
    if args.quick:
        argv += ["--samples=15", "--trips=200", "--cdf_trips=5000"]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            return None, "exit %d: %s" % (p.returncode, p.stderr.strip())
        with open(path) as f:
            return json.load(f), None
    except subprocess.TimeoutExpired:
        return None, "did not finish within %d s" % timeout
    except (OSError, ValueError) as e:
        return None, "cannot run %s: %s" % (binary, e)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def prune(out_dir, date, slug, written):
    """Keeps only this run for this machine: older dates of the same machine go, and so do
    files of this date that this run did not write (a chart it could not draw). Returns
    the names removed."""
    removed = []
    for f in glob.glob(os.path.join(out_dir, "*-%s*" % slug)):
        base = os.path.basename(f)
        m = re.match(r"(\d{4}-\d{2}-\d{2})-%s(\.json|\.md|-[a-z-]+\.png)$" % re.escape(slug), base)
        if m and (m.group(1) != date or base not in written):
            os.unlink(f)
            removed.append(base)
    return removed


def readme_refers_to(names):
    try:
        with open(os.path.join(REPO, "README.md")) as f:
            text = f.read()
    except OSError:
        return False
    return any(n in text for n in names)


def render(doc, fig, rows, charts, missing):
    m, matrix = doc["machine"], doc.get("matrix")
    out = ["# lwkt benchmark report: %s" % m["cpu_model"], ""]
    out += report_machine.markdown(m) + [""]
    out.append("Every figure is the median of %d repetitions (Google Benchmark); *spread* is "
               "the coefficient of variation over them, and a ratio whose inputs spread over "
               "10%% is marked *unstable*. Ratios are lwkt / peer from the same run: below 1.0 "
               "means lwkt is faster. Compare figures only within one run: ratios move with the "
               "host." % doc["repetitions"])
    if matrix:
        out.append("")
        out.append("Atomic ping-pong floor between workers 0 and 1 (their pinned threads "
                   "spinning on one cache line, nothing scheduled), modes of the single-round-"
                   "trip distribution: %s; median single round trip %.0f ns (each includes a "
                   "%.0f ns clock read). The matrix's lwkt and floor samples alternate, so each "
                   "ratio compares one phase of the host with itself." % (
                       report_table.floor_note(matrix), matrix["medians"]["floor"],
                       matrix["clock_ns"]))
    out += [""] + report_table.markdown(rows, matrix) + [""]
    out += report_table.preempt_line(fig) + [""]
    out += report_table.latency_lines(fig) + [""]
    out += report_table.memory_lines(fig) + [""]
    out += report_table.idle_policy_lines(fig) + [""]
    out += report_table.echo_lines(fig) + [""]
    out += report_http.markdown(doc.get("http"))
    if matrix:
        out.append("Worker-to-worker matrix (%d workers, median of %d samples of %d round trips,"
                   " first dropped), ns per round trip, lwkt / atomic floor:" % (
                       matrix["workers"], matrix["samples"], matrix["trips"]))
        out.append("")
        out.append("| initiator -> receiver | lwkt ns | atomic ns | ratio |")
        out.append("|---|---:|---:|---:|")
        for c in matrix["matrix"]:
            out.append("| %d (PU %d) -> %d (PU %d) | %.0f | %.0f | %.2fx |" % (
                c["a"], c["pu_a"], c["b"], c["pu_b"], c["lwkt_ns"], c["atomic_ns"],
                c["lwkt_ns"] / c["atomic_ns"]))
        out.append("")
    for name, (png, caption) in charts.items():
        out += ["## %s" % caption, "", "![%s](%s)" % (name, png), ""]
    if missing:
        out += ["## Not in this run", ""] + ["- %s: %s" % kv for kv in missing] + [""]
    out += ["## Groups", "",
            "*steal*: CPU seconds the hypervisor took from this VM's vCPUs while the group ran "
            "(/proc/stat); a group with steal has figures disturbed by the host.", "",
            "| group | seconds | steal s | note |", "|---|---:|---:|---|"]
    out += ["| %s | %.1f | %s | %s |" % (
        g["name"], g["seconds"], "-" if g.get("steal_s") is None else "%.2f" % g["steal_s"],
        g.get("error") or "") for g in doc["groups"]]
    out += ["", "## Every figure", "", "| benchmark | ns (median) | spread |", "|---|---:|---:|"]
    out += ["| %s | %.1f | %s |" % (n, fig.ns[n], report_table.pct(fig.spread(n)))
            for n in sorted(fig.ns)]
    return "\n".join(out) + "\n"


def readme_block(doc, rows, charts, md_rel, out_dir_rel):
    m = doc["machine"]
    who = "%s, %s PUs, %s hypervisor, %s" % (m["cpu_model"], m["process_cpus"], m["hypervisor"],
                                            m["date"][:10])
    out = [README_BEGIN, "", "From the committed run on **%s** (commit %s; full report: [%s](%s))."
           % (who, m["lwkt_commit"], os.path.basename(md_rel), md_rel), ""]
    out += report_table.markdown(rows, doc.get("matrix")) + [""]
    for name in ("peers", "throughput", "roundtrip-cdf", "matrix"):
        if name in charts:
            png, caption = charts[name]
            out += ["%s (%s):" % (caption, who), "",
                    "![%s](%s)" % (name, os.path.join(out_dir_rel, png)), ""]
    out.append(README_END)
    return "\n".join(out)


def update_readme(block):
    path = os.path.join(REPO, "README.md")
    with open(path) as f:
        text = f.read()
    if README_BEGIN in text and README_END in text:
        pre, rest = text.split(README_BEGIN, 1)
        post = rest.split(README_END, 1)[1]
        text = pre + block + post
    else:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def write_outputs(doc, out_dir, args, prune_older):
    machine = doc["machine"]
    missing = list(doc.get("missing", []))
    date, slug = machine["date"][:10], machine["slug"]
    stem = "%s-%s" % (date, slug)
    fig = report_table.Figures(doc["benchmarks"])
    rows = list(report_table.rows(fig))
    title = "%s, %s PUs" % (machine["cpu_model"], machine["process_cpus"])
    charts = {}
    for name, draw in report_charts.CHARTS:
        png = "%s-%s.png" % (stem, name)
        try:
            caption = draw({"fig": fig, "matrix": doc.get("matrix"), "rows": rows,
                            "title": title, "out": os.path.join(out_dir, png)})
            charts[name] = (png, caption)
        except report_charts.Missing as e:
            missing.append(("chart " + name, str(e)))
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump(doc, f, indent=1)
    md = render(doc, fig, rows, charts, missing)
    md_path = os.path.join(out_dir, stem + ".md")
    with open(md_path, "w") as f:
        f.write(md)
    update = args.update_readme
    if prune_older:
        if any(g.get("error") for g in doc["groups"]):
            # An incomplete run never replaces a complete one.
            print("report: a group failed: older runs of this machine are kept",
                  file=sys.stderr)
        else:
            written = {stem + ".json", stem + ".md"} | {png for png, _ in charts.values()}
            removed = prune(out_dir, date, slug, written)
            if removed and readme_refers_to(removed):
                # The README's Results section showed the run just replaced: show this one.
                update = True
    if update:
        rel = os.path.relpath(md_path, REPO)
        update_readme(readme_block(doc, rows, charts, rel, os.path.relpath(out_dir, REPO)))
    print(md)
    print("report: %s (%d charts, %d items missing)" % (md_path, len(charts), len(missing)),
          file=sys.stderr)


def rerender(args):
    with open(args.from_json) as f:
        doc = json.load(f)
    out_dir = args.out_dir or os.path.dirname(os.path.abspath(args.from_json))
    doc["missing"] = [tuple(m) for m in doc.get("missing", [])]
    write_outputs(doc, out_dir, args, prune_older=False)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True, help="folder holding bench/lwkt_bench")
    ap.add_argument("--quick", action="store_true", help="a one-minute subset")
    ap.add_argument("--out-dir", default=None, help="default results/ (results/quick/)")
    ap.add_argument("--update-readme", action="store_true",
                    help="rewrite README.md's Results section from this run")
    ap.add_argument("--from-json", default=None,
                    help="re-render the Markdown and charts of a saved run (no benchmarks)")
    args = ap.parse_args()
    if args.from_json:
        return rerender(args)
    args.repetitions = 3 if args.quick else 5
    args.min_time = 0.2 if args.quick else None
    out_dir = args.out_dir or os.path.join(REPO, "results", "quick" if args.quick else "")
    os.makedirs(out_dir, exist_ok=True)
    bench = os.path.join(args.bin_dir, "bench", "lwkt_bench")
    matrix_bin = os.path.join(args.bin_dir, "bench", "latency_matrix")

    machine = report_machine.collect(REPO)
    print("\n".join(report_machine.markdown(machine)), file=sys.stderr, flush=True)
    groups = [(n, f) for n, f, q in GROUPS if q or not args.quick]
    names, list_err = list_benchmarks(bench)
    covered = [b for b in names if any(re.search(f, b) for _, f, _ in GROUPS)]
    others = [b for b in names if b not in covered]
    if others and not args.quick:
        # Benchmarks added later (I/O, server) join the report without editing this list.
        groups.append(("other", "^(%s)$" % "|".join(re.escape(b) for b in others)))
    total = len(groups) + 2
    timeout = 300 if args.quick else 900
    benchmarks, context, group_log, missing = [], {}, [], []
    if list_err:
        missing.append(("benchmarks added later (group 'other')", list_err))
    for i, (name, flt) in enumerate(groups, 1):
        progress_start(i, total, name)
        t0, steal0 = time.time(), steal_seconds()
        got, ctx, err = run_group(bench, flt, args, timeout)
        benchmarks += got
        context = context or ctx
        secs = time.time() - t0
        steal1 = steal_seconds()
        group_log.append({"name": name, "seconds": round(secs, 1), "error": err,
                          "steal_s": None if steal0 is None or steal1 is None
                          else round(steal1 - steal0, 2)})
        if err:
            missing.append((name, err))
        progress(secs, "FAILED: " + err if err else "")
    progress_start(total, total, "worker-to-worker matrix")
    t0 = time.time()
    matrix, err = run_matrix(matrix_bin, args, timeout)
    group_log.append({"name": "worker-to-worker matrix", "seconds": round(time.time() - t0, 1),
                      "error": err})
    if err:
        missing.append(("worker-to-worker matrix", err))
    progress(time.time() - t0, "FAILED: " + err if err else "")
    progress_start(total, total, "HTTP beside nginx")
    t0, http, err = time.time(), None, None
    try:
        http = report_http.run(args.bin_dir, args.quick)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, AttributeError) as e:
        err = str(e) or type(e).__name__
        missing.append(("HTTP beside nginx", err))
    group_log.append({"name": "HTTP beside nginx", "seconds": round(time.time() - t0, 1),
                      "error": err})
    progress(time.time() - t0, "FAILED: " + err if err else "")

    doc = {"machine": machine, "context": context, "benchmarks": benchmarks, "matrix": matrix,
           "groups": group_log, "repetitions": args.repetitions, "quick": args.quick,
           "missing": missing, "http": http}
    write_outputs(doc, out_dir, args, prune_older=not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
