"""Tests of the report tooling (tools/report.py, report_table.py, report_charts.py) on
synthetic Google Benchmark and latency_matrix documents: figures, spread, ratio marks,
missing rows with reasons, the one-run-per-machine rule, and a full render with charts."""
import json
import os
import shutil
import sys
import tempfile
import types
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402
import report_table  # noqa: E402


def agg(name, kind, value, unit="ns"):
    return {"name": name + "_" + kind, "run_name": name, "run_type": "aggregate",
            "aggregate_name": kind, "real_time": value, "time_unit": unit}


def bench(name, median, cv, unit="ns", **counters):
    mean = median
    out = [agg(name, "mean", mean, unit), agg(name, "median", median, unit),
           agg(name, "stddev", mean * cv, unit)]
    out[1].update(counters)
    return out


def echo_benchmarks():
    b = []
    for prefix, conns, ns, cpu in (("BM_Echo_Lwkt", 1, 25000, 24000), ("BM_Echo_Lwkt", 64, 3300, 3150),
                                   ("BM_Echo_LwktNoSpin", 1, 70000, 28000),
                                   ("BM_Echo_LwktNoSpin", 64, 3350, 3200),
                                   ("BM_Echo_LwktEpoll", 64, 4600, 4400),
                                   ("BM_Echo_Epoll", 1, 72000, 24000),
                                   ("BM_Echo_Epoll", 64, 3333.3, 3100)):
        lat = {"p50_us": ns / 1e3 - 2, "p99_us": ns / 1e3 + 30} if conns == 1 else {}
        b += bench("%s/%d/real_time" % (prefix, conns), ns, 0.02,
                   items_per_second=1e9 / ns, server_cpu_ns=float(cpu), **lat)
    return b


MATRIX = {
    "workers": 2, "samples": 10, "trips": 100, "cdf_trips": 1000, "clock_ns": 20,
    "matrix": [{"a": 0, "b": 1, "pu_a": 0, "pu_b": 1, "lwkt_ns": 600, "atomic_ns": 100},
               {"a": 1, "b": 0, "pu_a": 1, "pu_b": 0, "lwkt_ns": 640, "atomic_ns": 110}],
    "cdf": {k: [[i / 10, base * (1 + i / 10)] for i in range(11)]
            for k, base in (("floor", 100), ("polling", 600), ("parked", 20000))},
    "medians": {"floor": 150, "polling": 900, "parked": 30000},
    "floor_modes": [{"ns": 109.5, "share": 0.4}, {"ns": 151.5, "share": 0.55}],
}


def benchmarks():
    b = []
    b += bench("BM_Switch_Raw", 12.0, 0.01)
    b += bench("BM_Peer_BoostContext_Jump", 12.5, 0.02)
    b += bench("BM_Yield", 30.0, 0.15)  # unstable input
    b += bench("BM_Peer_BoostFiber_Yield", 70.0, 0.01)
    b += bench("BM_RoundTrip_Polling", 0.7, 0.02, unit="us")
    b += bench("BM_Peer_AtomicPingPong", 100.0, 0.01)
    for n in (10, 100, 1000, 10000, 100000):
        b += bench("BM_Runq_EnqueueDequeue/%d" % n, 15.0 + n / 1e5, 0.01)
        b += bench("BM_Runq_EnqueueDequeueMixedUpri/%d" % n, 16.0, 0.01)
    b += bench("BM_WakeLatency_Futex/iterations:2000", 9000, 0.02, p50_ns=7000.0,
               p99_ns=15000.0, p999_ns=30000.0)
    for spin in (0, 50, 1000000):
        for rate in (1000, 100000):
            b += bench("BM_IdlePolicy/%d/%d/iterations:1/real_time" % (spin, rate), 300, 0.0,
                       unit="ms", p50_ns=40000.0 / (1 + spin), p99_ns=90000.0,
                       cpu=min(1.0, 0.01 + spin / 1e4), sent=300.0)
    for n in (256, 2, 16):  # out of order: the table sorts by worker count
        b += bench("BM_RuntimeMemory/%d/iterations:1" % n, 1.0, 0.0, unit="ms",
                   rss_started_kib=30.0 * n, rss_neighbours_kib=40.0 * n, rings=float(n),
                   eager_rings_kib=8.375 * n * n)
    return b


class TableTest(unittest.TestCase):
    def setUp(self):
        self.fig = report_table.Figures(benchmarks())
        self.rows = {r["label"]: r for r in report_table.rows(self.fig, "skipped")}

    def test_medians_are_scaled_to_ns_and_spread_is_cv(self):
        self.assertAlmostEqual(self.fig.ns["BM_RoundTrip_Polling"], 700.0)
        self.assertAlmostEqual(self.fig.spread("BM_Yield"), 0.15)
        self.assertIn("BM_WakeLatency_Futex", self.fig.counters)

    def test_ratio_target_and_unstable_mark(self):
        r = self.rows["raw switch, there and back"]
        self.assertAlmostEqual(r["ratio"], 12.0 / 12.5)
        self.assertTrue(r["met"])
        self.assertFalse(r["unstable"])
        y = self.rows["yield between two threads"]
        self.assertTrue(y["unstable"])  # 15% > 10%
        p = self.rows["cross-worker round trip, receiver polling"]
        self.assertAlmostEqual(p["ratio"], 7.0)
        self.assertFalse(p["met"])  # target 2.0x

    def test_memory_table_by_worker_count(self):
        lines = report_table.memory_lines(self.fig)
        body = [l for l in lines if l.startswith("| ") and l[2].isdigit()]
        self.assertEqual([l.split("|")[1].strip() for l in body], ["2", "16", "256"])
        # 256 workers: 7.5 MiB started, 10 MiB after, 256 rings, 536 MiB for all N^2 rings.
        self.assertEqual(body[2], "| 256 | 8 | 10 | 256 | 536 |")

    def test_idle_policy_table_rows_are_rates_columns_policies(self):
        lines = report_table.idle_policy_lines(self.fig)
        self.assertIn("| rate /s | park at once | spin 50 us | poll |", lines)
        self.assertIn("| 1000 | 40.0 / 90 us, 1% | 0.8 / 90 us, 2% | 0.0 / 90 us, 100% |",
                      lines)

    def test_missing_rows_say_why(self):
        r = self.rows["create+run+exit+join"]
        self.assertIn("skipped", r["missing"])
        self.assertIn("BM_CreateExit_Join", r["missing"])

    def test_a_failed_benchmark_is_a_missing_row_with_its_reason(self):
        b = benchmarks() + [{"name": "BM_CreateExit_Join", "run_name": "BM_CreateExit_Join",
                             "run_type": "iteration", "error_occurred": True,
                             "error_message": "out of stacks", "real_time": 0.0,
                             "time_unit": "ns"}]
        rows = {r["label"]: r for r in report_table.rows(report_table.Figures(b))}
        r = rows["create+run+exit+join"]
        self.assertIn("BM_CreateExit_Join: out of stacks", r["missing"])

    def test_cross_worker_rows_carry_the_floor_modes(self):
        md = "\n".join(report_table.markdown(list(self.rows.values()), MATRIX))
        line = [l for l in md.splitlines() if l.startswith("| cross-worker round trip, receiver polling")][0]
        self.assertIn("110 ns (40%) / 152 ns (55%); matrix 0->1: lwkt 6.00x floor", line)
        self.assertIn("7.00x", line)
        self.assertIn("NO", line)
        sw = [l for l in md.splitlines() if l.startswith("| raw switch, there and back")][0]
        self.assertTrue(sw.endswith("| - |"))  # not a cross-worker row


class OutputTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.dir)

    def touch(self, name):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write("x")

    def test_prune_keeps_one_run_per_machine(self):
        for n in ("2026-11-01-amd-x-2pu.json", "2026-11-01-amd-x-2pu.md",
                  "2026-11-01-amd-x-2pu-runq.png", "2026-11-01-intel-y-2pu.json",
                  "2026-12-01-amd-x-2pu.json", "2026-12-01-amd-x-2pu-matrix.png"):
            self.touch(n)
        removed = report.prune(self.dir, "2026-12-01", "amd-x-2pu", {"2026-12-01-amd-x-2pu.json"})
        self.assertEqual(sorted(os.listdir(self.dir)),
                         ["2026-11-01-intel-y-2pu.json", "2026-12-01-amd-x-2pu.json"])
        # A chart of today's date that this run did not draw goes too (it would be stale).
        self.assertIn("2026-12-01-amd-x-2pu-matrix.png", removed)

    def test_render_writes_markdown_json_and_charts(self):
        machine = {"cpu_model": "Test CPU", "cpu_vendor": "V", "cpu_family_model": "f m s",
                   "arch": "x86_64", "packages": 1, "numa_nodes": 1, "cores": 2, "pus": 2,
                   "process_cpus": 2, "kernel": "k", "hypervisor": "none", "compiler": "g++",
                   "libraries": {"hwloc": "1"}, "lwkt_commit": "abc", "date": "2026-12-01T00:00:00Z",
                   "slug": "test-cpu-2pu"}
        doc = {"machine": machine, "context": {}, "benchmarks": benchmarks(), "matrix": MATRIX,
               "groups": [{"name": "g", "seconds": 1.0, "error": None}], "repetitions": 5,
               "quick": False, "missing": [("tokens", "did not finish within 900 s")]}
        args = types.SimpleNamespace(update_readme=False)
        stdout = sys.stdout
        sys.stdout = open(os.devnull, "w")
        try:
            report.write_outputs(doc, self.dir, args, prune_older=True)
        finally:
            sys.stdout.close()
            sys.stdout = stdout
        stem = os.path.join(self.dir, "2026-12-01-test-cpu-2pu")
        with open(stem + ".md") as f:
            md = f.read()
        with open(stem + ".json") as f:
            self.assertEqual(json.load(f)["machine"]["slug"], "test-cpu-2pu")
        self.assertIn("| CPU | Test CPU", md)
        self.assertIn("- tokens: did not finish within 900 s", md)
        self.assertIn("chart throughput", md)  # named as missing, with its reason
        # With echo benchmarks: their table and the throughput chart.
        doc["benchmarks"] = benchmarks() + echo_benchmarks()
        doc["machine"] = dict(machine, slug="test-cpu-echo-2pu")
        sys.stdout = open(os.devnull, "w")
        try:
            report.write_outputs(doc, self.dir, args, prune_older=False)
        finally:
            sys.stdout.close()
            sys.stdout = stdout
        with open(os.path.join(self.dir, "2026-12-01-test-cpu-echo-2pu.md")) as f:
            md2 = f.read()
        self.assertIn("| 64 | single-threaded epoll loop | 300003 | 3333 | - | 3100 |", md2)
        self.assertIn("| 1 | lwkt, io_uring (default idle_spin 50 us) | 40000 | 25000 | 23.0 / 55.0 |"
                      " 24000 |", md2)
        self.assertIn("| TCP echo round trip, 64 connections, vs an epoll loop | 3300.0 |", md2)
        if shutil.which("gnuplot"):
            png = os.path.join(self.dir, "2026-12-01-test-cpu-echo-2pu-throughput.png")
            self.assertTrue(os.path.getsize(png) > 1000)
            self.assertNotIn("chart throughput", md2)
        self.assertIn("| g | 1.0 | - |  |", md)  # no steal figure recorded: a dash
        self.assertIsInstance(report.steal_seconds(), float)  # Linux has /proc/stat
        if shutil.which("gnuplot"):
            for chart in ("runq", "roundtrip-cdf", "matrix", "peers", "wake-latency",
                          "idle-policy"):
                png = "%s-%s.png" % (stem, chart)
                self.assertTrue(os.path.getsize(png) > 1000, chart)
                self.assertIn("(%s)" % os.path.basename(png), md)


if __name__ == "__main__":
    unittest.main()
