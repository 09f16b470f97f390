"""Who a pid is, from Linux's /proc: its argv and its start time since boot.

A managed process is recognised by both, so a pid the kernel has given to another process since is never taken
(and never signalled) for ours. Zombies count as gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    argv: list[str]
    start_ticks: int  # field 22 of /proc/PID/stat: clock ticks after boot

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The identity of a live (non-zombie) process, or None."""
        try:
            stat = (_PROC / str(pid) / "stat").read_text()
            raw_argv = (_PROC / str(pid) / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        # The command name in parentheses may contain spaces; the fields after the last ")" start at field 3.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X") or not raw_argv:
            return None
        argv = raw_argv.rstrip(b"\0").decode(errors="replace").split("\0")
        return cls(pid=pid, argv=argv, start_ticks=int(fields[19]))

    def uptime_s(self) -> float | None:
        try:
            since_boot = float((_PROC / "uptime").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return max(0.0, since_boot - self.start_ticks / os.sysconf("SC_CLK_TCK"))

