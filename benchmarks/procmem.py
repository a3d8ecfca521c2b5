"""Process memory for the benchmarks (Linux): the resident set now, from /proc/self/status."""


def rss() -> int:
    """This process's resident memory in bytes (VmRSS from /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")
