"""gdb commands for lwkt: list every lwkt thread, and unwind one that is switched out.

Load it with `source tools/gdb/lwkt.py` (or `add-auto-load-safe-path` + the
`<binary>-gdb.py` file that tools/gdb/install writes next to a binary); see docs/debugging.md.

  info lwkt-threads     every lwkt thread of every live Runtime: id, worker, name, state
                        (as Runtime::snapshot: run, runq, sleep, blocked, held, preempted,
                        tokwait, idle, transit), priority, wait message or channel, tokens
                        on its stack, stack depth now, high-water mark (with
                        Options::stack_watermark) and size
  lwkt-bt ID|ADDRESS|all
                        the backtrace of a thread: a running one through its worker's OS
                        thread, a switched-out one from the frame lwkt_cpu_switch saved on its
                        stack (x86-64 and AArch64), live or from a core file

Works from the debug information of the program (the names of lwkt's structures); nothing is
written to the inferior, so a core file is read the same way as a live process.
"""
import gdb
from gdb.unwinder import Unwinder

# thread.h's td_flags bits (checked against the program's own constants when it has them).
TDF = {
    "RUNNING": 0x0001, "RUNQ": 0x0002, "PREEMPT_LOCK": 0x0004, "NOSTART": 0x0010,
    "TSLEEPQ": 0x0080, "IDLETHREAD": 0x0100, "TSLEEP_DESCHEDULED": 0x20000,
}
STACK_PATTERN = 0x6C776B74C0FFEE11  # internal/stack.cc: kStackPattern
WATERMARK_SCAN_LIMIT = 16 << 20


def _flag(name):
    try:
        return int(gdb.parse_and_eval("lwkt::TDF_" + name))
    except gdb.error:
        return TDF[name]


def _vector(v):
    """The elements of a std::vector (libstdc++)."""
    impl = v["_M_impl"]
    start, finish = impl["_M_start"], impl["_M_finish"]
    return [(start + i).dereference() for i in range(int(finish - start))]


def _cstr(p):
    return p.string() if int(p) != 0 else ""


def _arch():
    name = gdb.selected_frame().architecture().name()
    if "x86-64" in name or "x86_64" in name:
        return "x86-64"
    if "aarch64" in name:
        return "aarch64"
    raise gdb.GdbError("lwkt: unsupported architecture %s" % name)


class LwktThread:
    def __init__(self, ident, rt, gd, td, transit=False):
        self.id, self.rt, self.gd, self.td = ident, rt, gd, td
        self.address = int(td.address)
        self.name = td["td_comm"].string()
        self.worker = int(gd["gd_cpuid"]) if gd is not None else -1
        self.flags = int(td["td_flags"])
        self.running = gd is not None and int(gd["gd_curthread"]) == self.address
        self.state = "transit" if transit else self._state()

    def _state(self):
        f = self.flags
        if f & _flag("IDLETHREAD"):
            return "idle" if not self.running else "idle(run)"
        if self.running or f & _flag("RUNNING"):
            return "run"
        if f & _flag("PREEMPT_LOCK"):
            return "preempted"
        if f & _flag("TSLEEP_DESCHEDULED"):
            return "sleep"
        if f & _flag("NOSTART"):
            return "held"
        if f & _flag("RUNQ"):
            return "tokwait" if int(self.td["td_contended"]) else "runq"
        return "blocked"

    def wait(self):
        parts = []
        if int(self.td["td_wmesg"]):
            parts.append(_cstr(self.td["td_wmesg"]))
        if self.flags & _flag("TSLEEPQ"):
            parts.append("chan 0x%x" % int(self.td["td_wchan"]))
        return " ".join(parts) or "-"

    def tokens(self):
        arr = self.td["td_toks_array"]
        base = arr[0].address
        n = int(self.td["td_toks_stop"] - base)
        return [_cstr(arr[i]["tr_tok"]["t_desc"]) for i in range(max(0, min(n, 32)))]

    def stack(self):
        """(depth now or None, high-water mark or None, size) in bytes."""
        st = self.td["td_stack"]
        lo, size = int(st["lo"]), int(st["size"])
        if self.flags & _flag("IDLETHREAD") or lo == 0:
            return None, None, 0
        sp = self.current_sp()
        depth = lo + size - sp if sp and lo <= sp <= lo + size else None
        high = None
        if self.gd is not None and bool(self.gd["gd_stack_watermark"]) and size <= WATERMARK_SCAN_LIMIT:
            try:
                mem = bytes(gdb.selected_inferior().read_memory(lo, size))
                pat = STACK_PATTERN.to_bytes(8, "little")
                i = 0
                while i + 8 <= size and mem[i:i + 8] == pat:
                    i += 8
                high = size - i
            except gdb.MemoryError:
                pass
        return depth, high, size

    def os_thread(self):
        """The gdb thread of this thread's worker, if the thread is running there."""
        if not self.running:
            return None
        tid = int(self.gd["gd_tid"])
        for th in gdb.selected_inferior().threads():
            if th.ptid[1] == tid:
                return th
        return None

    def current_sp(self):
        th = self.os_thread()
        if th is None:
            return int(self.td["td_sp"])
        keep = gdb.selected_thread()
        try:
            th.switch()
            return int(gdb.newest_frame().read_register("sp"))
        finally:
            keep.switch()


def collect():
    try:
        head = gdb.parse_and_eval("lwkt::internal::g_debug_runtimes")
    except gdb.error as e:
        raise gdb.GdbError("lwkt: no lwkt runtime in this program (%s)" % e)
    if int(head) == 0:
        return []
    out = []
    for r, rs in enumerate(_vector(head.dereference())):
        rs = rs.dereference()
        for gdp in _vector(rs["gds"]):
            gd = gdp.dereference()
            out.append(LwktThread(len(out) + 1, r, gd, gd["gd_idlethread"]))
            td = gd["gd_tdallq"]
            while int(td) != 0:
                out.append(LwktThread(len(out) + 1, r, gd, td.dereference()))
                td = td.dereference()["td_all_next"]
        for tdp in _vector(rs["in_transit"]):
            out.append(LwktThread(len(out) + 1, r, None, tdp.dereference(), transit=True))
    return out


def _kib(n):
    return "-" if n is None else "%.1f" % (n / 1024.0)


class InfoLwktThreads(gdb.Command):
    """List every lwkt thread: info lwkt-threads"""

    def __init__(self):
        super().__init__("info lwkt-threads", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        threads = collect()
        if not threads:
            print("no live lwkt runtime")
            return
        print("%-4s %-3s %-6s %-24s %-10s %4s %5s  %-24s %-20s %s  %s" % (
            "ID", "RT", "WORKER", "NAME", "STATE", "PRI", "UPRI", "WAIT", "TOKENS",
            "STACK now/max/size KiB", "ADDRESS"))
        for t in threads:
            depth, high, size = t.stack()
            stack = "-" if size == 0 else "%s/%s/%s" % (_kib(depth), _kib(high), _kib(size))
            print("%-4d %-3d %-6s %-24s %-10s %4d %5d  %-24s %-20s %-22s  0x%x" % (
                t.id, t.rt, t.worker if t.worker >= 0 else "-", t.name, t.state,
                int(t.td["td_pri"]), int(t.td["td_upri"]), t.wait(),
                ",".join(t.tokens()) or "-", stack, t.address))


class _SavedFrameUnwinder(Unwinder):
    """Claims the newest frame while lwkt-bt runs and gives, as its caller, the registers
    that lwkt_cpu_switch saved on a switched-out thread's stack (switch_frame_*.h)."""

    def __init__(self):
        super().__init__("lwkt-saved-context")
        self.regs = None
        self.saved_sp = 0

    def __call__(self, pending):
        if self.regs is None or pending.level() != 0:
            return None
        pc = pending.read_register("pc")
        # The id's stack address is the saved sp itself, so the frames that follow (on the
        # thread's own stack, above it) are outer to it whichever stack the OS thread uses.
        sp = gdb.Value(self.saved_sp).cast(gdb.lookup_type("void").pointer())
        ui = pending.create_unwind_info(_FrameId(sp, pc))
        for name, value in self.regs.items():
            ui.add_saved_register(name, gdb.Value(value).cast(pending.read_register(name).type))
        return ui


class _FrameId:
    def __init__(self, sp, pc):
        self.sp, self.pc = sp, pc


_UNWINDER = _SavedFrameUnwinder()
gdb.unwinder.register_unwinder(None, _UNWINDER, replace=True)


def _saved_registers(td_sp):
    inf = gdb.selected_inferior()

    def word(off):
        return int.from_bytes(bytes(inf.read_memory(td_sp + off, 8)), "little")

    if _arch() == "x86-64":
        # switch_frame_x86_64.h: fpcsr, r15, r14, r13, r12, rbx, rbp, return rip.
        return {"r15": word(0x08), "r14": word(0x10), "r13": word(0x18), "r12": word(0x20),
                "rbx": word(0x28), "rbp": word(0x30), "rip": word(0x38), "rsp": td_sp + 0x40}
    # switch_frame_aarch64.h: d8-d15, x19-x28, x29, x30, fpcr, pad.
    regs = {"x%d" % (19 + i): word(0x40 + 8 * i) for i in range(10)}
    regs.update({"x29": word(0x90), "x30": word(0x98), "pc": word(0x98), "sp": td_sp + 0xB0})
    return regs


def _print_frames(start, limit=64):
    f, i = start, 0
    while f is not None and i < limit:
        sal = f.find_sal()
        where = ""
        if sal.symtab is not None:
            where = " at %s:%d" % (sal.symtab.filename, sal.line)
        name = f.name() or "??"
        print("  #%-2d 0x%016x in %s ()%s" % (i, f.pc(), name, where))
        try:
            f = f.older()
        except gdb.error as e:
            print("  (unwinding stopped: %s)" % e)
            break
        i += 1


def backtrace(t):
    print("lwkt thread %d '%s' (worker %s, %s):" % (t.id, t.name, t.worker, t.state))
    th = t.os_thread()
    if th is not None:  # running: its frames are its worker's OS thread's
        keep = gdb.selected_thread()
        try:
            th.switch()
            gdb.invalidate_cached_frames()
            _print_frames(gdb.newest_frame())
        finally:
            keep.switch()
        return
    td_sp = int(t.td["td_sp"])
    if td_sp == 0:
        print("  (no saved context)")
        return
    regs = _saved_registers(td_sp)
    resume = regs.get("rip", regs.get("pc"))
    sym = gdb.execute("info symbol 0x%x" % resume, to_string=True)
    if sym.startswith("lwkt_cpu_trampoline in "):
        # Never switched in: its first switch-in "returns" into the trampoline itself.
        print("  #0  0x%016x in lwkt_cpu_trampoline () (not run yet)" % resume)
        return
    _UNWINDER.regs = regs
    _UNWINDER.saved_sp = td_sp
    gdb.invalidate_cached_frames()
    try:
        _print_frames(gdb.newest_frame().older())
    finally:
        _UNWINDER.regs = None
        gdb.invalidate_cached_frames()


class LwktBt(gdb.Command):
    """Backtrace of lwkt threads: lwkt-bt ID | ADDRESS | all  (IDs from info lwkt-threads)"""

    def __init__(self):
        super().__init__("lwkt-bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        arg = arg.strip()
        if not arg:
            raise gdb.GdbError("usage: lwkt-bt ID | ADDRESS | all")
        threads = collect()
        if arg == "all":
            chosen = threads
        else:
            want = int(arg, 0)
            chosen = [t for t in threads if t.id == want or t.address == want]
            if not chosen:
                raise gdb.GdbError("lwkt-bt: no lwkt thread %s (see info lwkt-threads)" % arg)
        for t in chosen:
            backtrace(t)


InfoLwktThreads()
LwktBt()
