"""The report's charts, drawn by gnuplot (Debian's gnuplot-nox, pngcairo terminal).

Each chart function returns (file name, caption) on success or raises Missing with the
reason the chart cannot be drawn from this run (the report prints it; it never fails).
lwkt series are always blue or purple, peers orange, the hardware floor grey.
"""
import os
import subprocess
import tempfile

import report_table

LWKT, LWKT2, PEER, FLOOR, EXTRA = "#1f5fbf", "#6a3d9a", "#e07b00", "#707070", "#2a9d3c"


class Missing(Exception):
    pass


def _gnuplot(script, data_files):
    with tempfile.TemporaryDirectory() as d:
        for name, text in data_files.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        try:
            p = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True,
                               cwd=d, timeout=60)
        except FileNotFoundError:
            raise Missing("gnuplot is not installed (tools/setup installs gnuplot-nox)")
        except (OSError, subprocess.TimeoutExpired) as e:
            raise Missing("gnuplot did not run: %s" % e)
        if p.returncode != 0:
            raise Missing("gnuplot failed: %s" % p.stderr.strip().splitlines()[-1:])


def _head(out, title, w=1000, h=600):
    return ('set terminal pngcairo size %d,%d font "sans,11" noenhanced\nset output "%s"\n'
            'set title "%s"\nset grid\nset key top left\n' % (w, h, os.path.abspath(out),
                                                           title.replace('"', "'")))


def _bars(out, title, ylabel, w, h, xtics, data, series):
    """A clustered bar chart, log y: series = [(column, colour, key title)]."""
    s = _head(out, title, w, h)
    s += ('set style data histograms\nset style histogram clustered gap 1\n'
          'set style fill solid 0.9 border -1\nset boxwidth 0.9\nset logscale y\n'
          'set ylabel "%s"\n%s\nset key top left\n' % (ylabel, xtics))
    s += "plot " + ", ".join('"%s" u %d%s lc rgb "%s" t "%s"' % (
        "bars.dat" if i == 0 else "", col, ":xtic(1)" if i == 0 else "", colour, key)
        for i, (col, colour, key) in enumerate(series)) + "\n"
    _gnuplot(s, {"bars.dat": "\n".join(data) + "\n"})


def runq(fig, out, machine):
    pts = []
    for n in (10, 100, 1000, 10000, 100000):
        a, b = "BM_Runq_EnqueueDequeue/%d" % n, "BM_Runq_EnqueueDequeueMixedUpri/%d" % n
        if fig.has(a) and fig.has(b):
            pts.append("%d %g %g" % (n, fig.ns[a], fig.ns[b]))
    if len(pts) < 3:
        raise Missing("fewer than 3 run-queue sizes measured (BM_Runq_EnqueueDequeue/N)")
    s = _head(out, "Run queue: enqueue + dequeue vs runnable threads (%s)" % machine)
    s += ('set logscale x\nset rmargin 6\nset xlabel "runnable threads on the queue"\n'
          'set ylabel "ns per enqueue + dequeue (median)"\nset yrange [0:*]\n'
          'plot "runq.dat" u 1:2 w lp lw 2 pt 7 lc rgb "%s" t "lwkt runq, 1 td_upri value", '
          '"runq.dat" u 1:3 w lp lw 2 pt 5 lc rgb "%s" t "lwkt runq, 4 td_upri values"\n' % (
              LWKT, EXTRA))
    _gnuplot(s, {"runq.dat": "\n".join(pts) + "\n"})
    return "Run-queue cost against the number of runnable threads"


def roundtrip_cdf(matrix, out, machine):
    if not matrix or not matrix.get("cdf"):
        raise Missing("latency_matrix did not run")
    files, plots = {}, []
    for key, label, colour in (("floor", "atomic ping-pong (floor)", FLOOR),
                               ("polling", "lwkt, receiver polling", LWKT),
                               ("parked", "lwkt, receiver parked", LWKT2)):
        q = matrix["cdf"].get(key) or []
        if not q:
            continue
        files[key + ".dat"] = "\n".join("%g %g" % (ns, f) for f, ns in q) + "\n"
        plots.append('"%s.dat" u 1:2 w l lw 2 lc rgb "%s" t "%s (median %.0f ns)"' % (
            key, colour, label, matrix["medians"][key]))
    if not plots:
        raise Missing("latency_matrix wrote no distributions")
    s = _head(out, "Cross-worker round trip, workers 0 and 1: CDF (%s)" % machine)
    s += ('set logscale x\nset xlabel "round trip, ns (each includes one clock read, %.0f ns)"\n'
          'set ylabel "fraction of round trips <= x"\nset yrange [0:1]\nset key bottom right\n'
          'plot %s\n' % (matrix.get("clock_ns", 0), ", ".join(plots)))
    _gnuplot(s, files)
    return "Cross-worker round-trip latency distributions (CDF) beside the atomic floor"


def heatmap(matrix, out, machine):
    cells = (matrix or {}).get("matrix") or []
    if not cells:
        raise Missing("latency_matrix did not run")
    n = matrix["workers"]
    # A full n x n grid (gnuplot's image needs one); the diagonal has no pair: NaN, blank.
    val = {(c["a"], c["b"]): c for c in cells}
    data = {"lwkt_ns": [], "atomic_ns": []}
    for k in data:
        for a in range(n):
            for b in range(n):
                c = val.get((a, b))
                v = c[k] if c and c[k] is not None else float("nan")
                data[k].append("%d %d %s" % (b, a, "NaN" if v != v else "%g" % v))
            data[k].append("")
    data["cells"] = ["%d %d %g %g" % (c["b"], c["a"], c["lwkt_ns"] or 0, c["atomic_ns"] or 0)
                     for c in cells]
    labels = n <= 8
    s = _head(out, "Worker-to-worker round trip, median ns (%s)" % machine, 1200, 560)
    s += ('set multiplot layout 1,2 title "Worker-to-worker round trip, median ns (%s)"\n'
          'set palette defined (0 "#f7fbff", 1 "#6baed6", 2 "#08306b")\n'
          'set xrange [-0.5:%g]\nset yrange [%g:-0.5]\n'
          'set xtics 1\nset ytics 1\nset xlabel "receiver worker"\nset ylabel "initiator worker"\n'
          'set cblabel "ns per round trip"\nunset key\nset grid front\n' % (
              machine.replace('"', "'"), n - 0.5, n - 0.5))
    for col, k, t in ((3, "lwkt_ns", "lwkt schedule there and back (polling)"),
                      (4, "atomic_ns", "atomic ping-pong, same PUs (floor)")):
        # Each panel its own colour scale (the floor is several times lower): values in cells.
        hi = max((c[k] for c in cells if c[k] is not None), default=1)
        s += 'set title "%s"\nset cbrange [0:%g]\n' % (t, hi)
        s += 'plot "%s.dat" u 1:2:3 w image%s\n' % (
            k, (', "cells.dat" u 1:2:(sprintf("%%.0f", $%d)) w labels tc rgb "#d04000"' % col
                if labels else ""))
    s += "unset multiplot\n"
    _gnuplot(s, {k + ".dat": "\n".join(v) + "\n" for k, v in data.items()})
    return "Every ordered pair of workers: lwkt round trip next to the atomic floor"


def peers(table_rows, out, machine):
    # Rows against a peer (BM_Peer_*): lwkt-against-lwkt rows (run-queue sizes) have their
    # own chart, and drawing their second lwkt figure in the peer colour would mislabel it.
    rs = [r for r in table_rows if "missing" not in r and r["target"] is not None and
          r["peer"].startswith("BM_Peer_")]
    if not rs:
        raise Missing("no row with a target was measured")
    lines = ['"%s\\nvs %s" %g %g' % (r["label"], r["peer"].replace("BM_Peer_", "").replace(
        "BM_", ""), r["lwkt_ns"], r["peer_ns"]) for r in rs]
    _bars(out, "lwkt beside its peers, same run (%s)" % machine,
          "ns per operation (median, log scale)", 1200, 700,
          "set xtics rotate by 35 right\nset bmargin 13\nset lmargin 12", lines,
          [(2, LWKT, "lwkt"), (3, PEER, "peer")])
    return "Each targeted row: lwkt (blue) and the peer it is compared with (orange)"


def wake_latency(fig, out, machine):
    rows = []
    for name in sorted(fig.counters):
        b = fig.counters[name]
        if "p999_ns" in b:
            label = (name.replace("BM_WakeLatency_", "IPI to parked worker, ")
                     .replace("BM_WakeupToRun_", "wakeup -> sleeper runs, "))
            rows.append('"%s" %g %g %g' % (label, b["p50_ns"], b["p99_ns"], b["p999_ns"]))
    if not rows:
        raise Missing("no latency benchmark (BM_WakeLatency_*, BM_WakeupToRun_*) was measured")
    _bars(out, "Wake latency percentiles (%s)" % machine, "ns (log scale)", 1000, 600,
          "set xtics rotate by -20 left\nset bmargin 7", rows,
          [(2, LWKT, "p50"), (3, LWKT2, "p99"), (4, FLOOR, "p99.9")])
    return "Wake-up latency percentiles: a parked worker per kick mechanism, and tsleep wakeups"


def idle_policy(fig, out, machine):
    import report_table  # the table's parsing of BM_IdlePolicy/<spin_us>/<rate>
    pts = report_table.idle_policy_points(fig)
    if not pts:
        raise Missing("no idle-policy benchmark (BM_IdlePolicy/<spin_us>/<rate>) was measured")
    files, plots = {}, []
    colours = [LWKT, LWKT2, PEER, EXTRA, FLOOR]
    for i, rate in enumerate(sorted(pts)):
        rows = sorted(pts[rate].items(), key=lambda kv: kv[1][2])
        files["r%d.dat" % rate] = "\n".join('%g %g "%s"' % (v[2] * 100, v[0] / 1e3,
                                                            report_table.policy_label(p))
                                            for p, v in rows) + "\n"
        c = colours[i % len(colours)]
        plots.append('"r%d.dat" u 1:2 w lp lw 2 pt 7 lc rgb "%s" t "%d messages/s"' % (rate, c, rate))
        plots.append('"r%d.dat" u 1:2:3 w labels offset 1,0.6 left font ",8" tc rgb "%s" notitle'
                     % (rate, c))
    s = _head(out, "Idle policy: delivery latency against the receiving worker's CPU (%s)"
              % machine)
    s += ('set logscale y\nset xrange [0:105]\nset xlabel "receiving worker CPU (% of one CPU)"\n'
          'set ylabel "p50 delivery latency, us (log scale)"\nset key top right\n')
    s += "plot " + ", ".join(plots) + "\n"
    _gnuplot(s, files)
    return "Idle policy: p50 latency against the receiving worker's CPU, per message rate"


def throughput(fig, out, machine):
    names = [n for n in fig.ns if n.startswith(("BM_Echo", "BM_Http"))]
    if not names:
        raise Missing("no echo or HTTP benchmark (BM_Echo_*, BM_Http_*) in this build: "
                      "they arrive with the I/O and server issues")
    lines = []
    for conns in (1, 64):
        vals = []
        for prefix, _ in report_table.ECHO_SERVERS:
            b = fig.counters.get("%s/%d" % (prefix, conns))
            vals.append(b["items_per_second"] if b and "items_per_second" in b else None)
        if all(v is None for v in vals):
            continue
        lines.append('"%d connection%s" %s' % (conns, "" if conns == 1 else "s", " ".join(
            "%g" % v if v is not None else "NaN" for v in vals)))
    if not lines:
        raise Missing("BM_Echo_* ran but reported no throughput")
    _bars(out, "TCP echo over loopback: round trips per second, same client (%s)" % machine,
          "round trips per second (log scale)", 1000, 600, 'set datafile missing "NaN"', lines,
          [(2, LWKT, report_table.ECHO_SERVERS[0][1]), (3, LWKT2, report_table.ECHO_SERVERS[1][1]),
           (4, EXTRA, report_table.ECHO_SERVERS[2][1]), (5, PEER, report_table.ECHO_SERVERS[3][1]),
           (6, FLOOR, report_table.ECHO_SERVERS[4][1])])
    return ("TCP echo throughput: lwkt (blue, purple, green) beside a single-threaded epoll "
            "loop (orange) and Boost.Asio (grey)")


CHARTS = [
    ("runq", lambda d: runq(d["fig"], d["out"], d["title"])),
    ("roundtrip-cdf", lambda d: roundtrip_cdf(d["matrix"], d["out"], d["title"])),
    ("matrix", lambda d: heatmap(d["matrix"], d["out"], d["title"])),
    ("peers", lambda d: peers(d["rows"], d["out"], d["title"])),
    ("wake-latency", lambda d: wake_latency(d["fig"], d["out"], d["title"])),
    ("idle-policy", lambda d: idle_policy(d["fig"], d["out"], d["title"])),
    ("throughput", lambda d: throughput(d["fig"], d["out"], d["title"])),
]
