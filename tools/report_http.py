"""The report's HTTP section: examples/httpd beside nginx, same machine, same run.

Both servers answer the same requests with the same number of bytes (each response's
header section is padded to the larger of the two: ours with --pad_headers, nginx with
add_header), keep-alive on, loopback only. Per configuration (endpoint x placement x
server) wrk runs `runs` times; medians and the spread (max-min over median) are reported,
with requests/s, wrk's p50/p99 latency, and the server's CPU seconds per request (utime +
stime of its processes, from /proc/<pid>/stat, before and after). Placements:

  shared    server on both CPUs (2 workers / 2 nginx workers), wrk unpinned: what a user
            tries first
  isolated  server on CPU 0 (1 worker), wrk pinned to CPU 1

Then the open-loop client (examples/httpd/loadgen: a fixed request rate, latency from the
intended send time, so no coordinated omission) at 50% and 90% of nginx's peak rate from
the shared fixed-response runs, against both servers.
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

BODY = "Hello, world!\n"
NGINX_CONF = """
worker_processes {workers};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  default_type text/plain;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location = / {{ {pad} return 200 "{body}"; }}
    location /static/ {{ {pad} alias {root}/; }}
  }}
}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch_raw(port, path):
    """The whole bytes of one response (headers and body) to GET path."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: l\r\n\r\n" % path).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)content-length: (\d+)", head)
        n = int(m.group(1)) if m else 0
        while len(rest) < n:
            rest += s.recv(65536)
        return head + b"\r\n\r\n" + rest[:n]


def wait_listening(port, proc, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except OSError:
            pass
    return total


def server_pids(proc):
    """The server's processes: the process itself and its children (nginx's workers)."""
    pids = [proc.pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        pids += [int(x) for x in out.stdout.split()]
    except OSError:
        pass
    return pids


class Server:
    """One server instance (httpd or nginx) for one endpoint and placement."""

    def __init__(self, kind, bins, root, workers, cpus, pad):
        self.kind, self.port = kind, free_port()
        self.dir = tempfile.mkdtemp(prefix="report_http_")
        pin = ["taskset", "-c", cpus] if cpus else []
        if kind == "nginx":
            conf = os.path.join(self.dir, "nginx.conf")
            padline = 'add_header X-Pad "%s";' % ("x" * pad) if pad > 0 else ""
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(workers=workers, dir=self.dir, port=self.port,
                                          pad=padline, body=BODY.replace("\n", "\\n"), root=root))
            argv = pin + ["nginx", "-c", conf, "-p", self.dir, "-e", os.path.join(self.dir, "error.log")]
        else:
            argv = pin + [os.path.join(bins, "examples", "httpd", "httpd"),
                          "--address=127.0.0.1", "--port=%d" % self.port,
                          "--workers=%d" % workers, "--root=" + root if kind == "httpd-files"
                          else "--body=" + BODY, "--pad_headers=%d" % pad]
            if kind.endswith("handoff"):
                argv.append("--balance=handoff")
            if kind.endswith("spin50"):
                argv.append("--idle_spin=50us")
            if kind.endswith("nopin"):
                argv.append("--pin=false")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_listening(self.port, self.proc):
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() else ""
            self.stop()
            raise RuntimeError("%s did not start: %s" % (kind, err.strip()[-300:]))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if self.kind != "nginx" else signal.SIGQUIT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_wrk(port, path, seconds, conns, cpus, threads):
    pin = ["taskset", "-c", cpus] if cpus else []
    out = subprocess.run(pin + ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % seconds,
                                "--latency", "http://127.0.0.1:%d%s" % (port, path)],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def lat(p):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\b" % p, out, re.M)
        if not m:
            return None
        return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return {"rps": rps, "p50_us": lat("50"), "p99_us": lat("99"),
            "errors": errors.group(0) if errors else None}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (max(xs) - min(xs)) / statistics.median(xs) if len(xs) > 1 and statistics.median(xs) else 0.0


def run(bins, quick):
    """Returns the section's document (a dict), or raises RuntimeError with the reason."""
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool):
            raise RuntimeError("%s is not installed (tools/setup installs it)" % tool)
    runs, seconds = (1, 2) if quick else (3, 5)
    root = tempfile.mkdtemp(prefix="report_http_root_")
    os.chmod(root, 0o755)  # nginx's workers run as nobody
    with open(os.path.join(root, "file.bin"), "wb") as f:
        f.write(bytes((i * 7) % 251 for i in range(4096)))
    os.chmod(os.path.join(root, "file.bin"), 0o644)
    endpoints = [("fixed", "/", "httpd"), ("4 KiB file", "/static/file.bin", "httpd-files")]
    placements = [("shared", 2, None, None, 2), ("isolated", 1, "0", "1", 1)]
    doc = {"runs": runs, "seconds": seconds, "connections": 50, "rows": [], "bytes": {},
           "openloop": []}
    pads = {}
    try:
        for ep_name, path, ours in endpoints:
            path_ours = "/file.bin" if ours == "httpd-files" else path
            sizes = {}
            for kind, p in ((ours, path_ours), ("nginx", path)):
                s = Server(kind, bins, root, 1, None, 0)
                try:
                    sizes[kind] = len(fetch_raw(s.port, p))
                finally:
                    s.stop()
            # "X-Pad: " + pad + CRLF is 9 bytes more than the pad itself.
            total = max(sizes.values()) + 16
            pad_ours, pad_nginx = total - sizes[ours] - 9, total - sizes["nginx"] - 9
            pads[ours] = pad_ours
            pads["nginx " + ep_name] = pad_nginx
            doc["bytes"][ep_name] = total
            kinds = [(ours, pad_ours, path_ours), ("nginx", pad_nginx, path)]
            if ours == "httpd":
                kinds.insert(1, ("httpd-handoff", pad_ours, path_ours))
            for pl_name, workers, server_cpus, client_cpus, threads in placements:
                for kind, pad, p in kinds:
                    if kind == "httpd-handoff" and pl_name != "shared":
                        continue
                    results = []
                    s = Server(kind, bins, root, workers, server_cpus, pad)
                    try:
                        got = len(fetch_raw(s.port, p))
                        if got != total:
                            raise RuntimeError("%s sends %d bytes for %s, not %d" % (
                                kind, got, p, total))
                        for _ in range(runs):
                            pids = server_pids(s.proc)
                            c0 = cpu_seconds(pids)
                            w = run_wrk(s.port, p, seconds, doc["connections"], client_cpus,
                                        threads)
                            w["cpu_us_per_req"] = (cpu_seconds(pids) - c0) * 1e6 / max(
                                1.0, w["rps"] * seconds)
                            results.append(w)
                    finally:
                        s.stop()
                    doc["rows"].append({
                        "endpoint": ep_name, "placement": pl_name, "server": kind,
                        "rps": med([r["rps"] for r in results]),
                        "rps_spread": spread([r["rps"] for r in results]),
                        "p50_us": med([r["p50_us"] for r in results]),
                        "p99_us": med([r["p99_us"] for r in results]),
                        "cpu_us_per_req": med([r["cpu_us_per_req"] for r in results]),
                        "errors": [r["errors"] for r in results if r["errors"]]})
        peak = next((r["rps"] for r in doc["rows"] if r["endpoint"] == "fixed" and
                     r["placement"] == "shared" and r["server"] == "nginx"), None)
        if peak:
            for frac in (0.5, 0.9):
                for kind in ("httpd", "httpd-spin50", "httpd-nopin", "nginx"):
                    pad = pads["nginx fixed"] if kind == "nginx" else pads["httpd"]
                    s = Server(kind, bins, root, 2, None, pad)
                    try:
                        out = subprocess.run(
                            [os.path.join(bins, "examples", "httpd", "loadgen"),
                             "--port=%d" % s.port, "--rate=%d" % int(peak * frac),
                             "--seconds=%d" % seconds, "--connections=50"],
                            capture_output=True, text=True, timeout=seconds + 40).stdout
                    finally:
                        s.stop()
                    row = json.loads(out)
                    row.update({"server": kind, "fraction": frac})
                    doc["openloop"].append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return doc


def markdown(doc):
    if not doc:
        return []
    out = ["## HTTP: examples/httpd beside nginx", "",
           "wrk, %d connections, %d s per run, %d runs per configuration (medians; spread: "
           "(max-min)/median of requests/s); each response padded to the same size as "
           "nginx's (%s bytes). wrk shares the machine with the server, and differences "
           "under ~20%% are within this VM's noise. CPU: the server's user+system seconds "
           "per request." % (doc["connections"], doc["seconds"], doc["runs"],
                             ", ".join("%s %d" % kv for kv in doc["bytes"].items())), "",
           "| endpoint | placement | server | requests/s | spread | p50 us | p99 us | CPU us/req "
           "| req/s vs nginx | CPU vs nginx |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["rows"]:
        ng = next((x for x in doc["rows"] if x["server"] == "nginx" and
                   x["endpoint"] == r["endpoint"] and x["placement"] == r["placement"]), None)
        ratio = "%.2fx" % (r["rps"] / ng["rps"]) if ng and ng["rps"] else "-"
        cpu = "%.2fx" % (r["cpu_us_per_req"] / ng["cpu_us_per_req"]) \
            if ng and ng["cpu_us_per_req"] else "-"
        fmt = lambda v: "-" if v is None else "%.0f" % v  # noqa: E731
        out.append("| %s | %s | %s | %.0f | %.0f%% | %s | %s | %.1f | %s | %s |" % (
            r["endpoint"], r["placement"], r["server"], r["rps"], 100 * r["rps_spread"],
            fmt(r["p50_us"]), fmt(r["p99_us"]), r["cpu_us_per_req"], ratio, cpu))
    if doc["openloop"]:
        out += ["", "Open loop (examples/httpd/loadgen, shared placement, fixed response): "
                "requests due at a constant rate, latency from the due time. httpd parks an "
                "idle worker at once (its default); httpd-spin50 polls 50 us first, which "
                "takes the CPU the client shares with it; httpd-nopin does not pin its workers "
                "(--pin=false; nginx does not pin by default either), so the kernel may move "
                "a woken worker off a CPU the client holds.", "",
                "| rate | server | achieved/s | p50 us | p90 us | p99 us | p99.9 us | errors |",
                "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in doc["openloop"]:
            out.append("| %d (%.0f%% of nginx's peak) | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %d |" % (
                r["rate"], 100 * r["fraction"], r["server"], r["achieved_rps"], r["p50_us"],
                r["p90_us"], r["p99_us"], r["p999_us"], r["errors"]))
    return out + [""]
