"""Process memory for the benchmarks (Linux): the resident set now, from /proc/self/status."""


def rss() -> int:
    """This process's resident memory in bytes (VmRSS from /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def status(field: str) -> int:
    """A size from /proc/self/status in bytes: VmRSS, VmHWM (the peak resident set of this
    program: unlike ru_maxrss it does not inherit the parent's peak across fork), RssAnon, RssFile."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")
