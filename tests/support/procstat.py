"""What the kernel says of a running process: resident and peak memory, CPU time used.
Shared by the tests (memory bounds) and bench/ (CPU per request)."""

from __future__ import annotations

import os
from pathlib import Path


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) in MB, and CPU seconds used (user + system), of ``pid``."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out
