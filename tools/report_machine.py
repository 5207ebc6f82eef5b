"""The machine block of the report: what produced the figures.

Every field comes from the running system (procfs, lscpu, hwloc's tools, dpkg, git); a field
that cannot be read says so ("unknown: <why>") instead of guessing.
"""
import datetime
import os
import platform
import re
import subprocess

LIBRARIES = [
    ("hwloc", "libhwloc-dev"),
    ("liburing", "liburing-dev"),
    ("Abseil", "libabsl-dev"),
    ("Boost", "libboost-context-dev"),
    ("Google Benchmark", "libbenchmark-dev"),
    ("GoogleTest", "libgtest-dev"),
]


def _run(argv, cwd=None):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    if p.returncode != 0:
        return None, (p.stderr.strip() or "exit %d" % p.returncode).splitlines()[0]
    return p.stdout.strip(), None


def _lscpu():
    out, _ = _run(["lscpu"])
    fields = {}
    for line in (out or "").splitlines():
        k, _, v = line.partition(":")
        fields[k.strip()] = v.strip()
    return fields


def _cpuinfo():
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                fields.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return fields


def _hwloc_count(kind):
    out, err = _run(["hwloc-calc", "--number-of", kind, "machine:0"])
    return int(out) if out and out.isdigit() else "unknown: %s" % err


def collect(repo):
    lscpu, cpuinfo = _lscpu(), _cpuinfo()
    model = lscpu.get("Model name") or cpuinfo.get("model name") or "unknown CPU"
    m = {
        "cpu_model": model,
        "cpu_vendor": lscpu.get("Vendor ID") or cpuinfo.get("vendor_id") or "unknown",
        "cpu_family_model": "family %s model %s stepping %s" % (
            lscpu.get("CPU family", "?"), lscpu.get("Model", "?"), lscpu.get("Stepping", "?")),
        "arch": platform.machine(),
        "packages": _hwloc_count("package"),
        "numa_nodes": _hwloc_count("numanode"),
        "cores": _hwloc_count("core"),
        "pus": _hwloc_count("pu"),
        "process_cpus": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
    }
    hv = lscpu.get("Hypervisor vendor")
    virt, _ = _run(["systemd-detect-virt"])
    m["hypervisor"] = hv or ("none" if "hypervisor" not in cpuinfo.get("flags", "") else
                             "present (vendor not reported)")
    if virt and virt != "none":
        m["container_or_vm"] = virt
    cc, err = _run(["g++", "--version"])
    m["compiler"] = cc.splitlines()[0] if cc else "unknown: %s" % err
    libs = {}
    for name, pkg in LIBRARIES:
        # One line per installed architecture (amd64, arm64 for the cross build): the
        # first is the native one, as dpkg lists it.
        v, err = _run(["dpkg-query", "-W", "-f=${Version}\n", pkg])
        libs[name] = v.splitlines()[0] if v else "unknown: %s" % err
    m["libraries"] = libs
    commit, err = _run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo)
    dirty, _ = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    m["lwkt_commit"] = (commit + ("+local changes" if dirty else "")) if commit else \
        "unknown: %s" % err
    m["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    m["slug"] = slug(m, lscpu)
    return m


def slug(m, lscpu):
    """A file-name key per distinct machine: CPU model, family/model numbers (some VMs only
    say "AMD EPYC"), and how many PUs the process may use (a 2-vCPU guest and a 16-core host
    of one CPU model are different machines for these figures)."""
    base = re.sub(r"[^a-z0-9]+", "-", m["cpu_model"].lower()).strip("-")
    base = re.sub(r"-(processor|cpu|with-radeon-graphics)\b", "", base)
    fm = "f%sm%s" % (lscpu.get("CPU family", "x"), lscpu.get("Model", "x"))
    return "%s-%s-%dpu" % (base[:40].strip("-"), fm, m["process_cpus"])


def markdown(m):
    libs = ", ".join("%s %s" % kv for kv in m["libraries"].items())
    hv = m["hypervisor"] + (" (%s)" % m["container_or_vm"] if "container_or_vm" in m else "")
    return [
        "| machine | |",
        "|---|---|",
        "| CPU | %s (%s, %s) |" % (m["cpu_model"], m["cpu_vendor"], m["cpu_family_model"]),
        "| topology (hwloc) | %s package(s), %s NUMA node(s), %s core(s), %s PU(s); %d usable "
        "by this process |" % (m["packages"], m["numa_nodes"], m["cores"], m["pus"],
                               m["process_cpus"]),
        "| hypervisor | %s |" % hv,
        "| kernel | %s (%s) |" % (m["kernel"], m["arch"]),
        "| compiler | %s |" % m["compiler"],
        "| libraries | %s |" % libs,
        "| lwkt commit | %s |" % m["lwkt_commit"],
        "| date | %s |" % m["date"],
    ]
