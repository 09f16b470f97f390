"""Reading Linux's /proc: a process's command line, liveness and age; who listens on a port; who holds a file lock.

Used to recognise our own processes (by their exact command line, so a recycled pid is never mistaken for ours)
and to name the culprit in error messages ("port 19092 is in use by pid 5940: java ... kafka.Kafka").
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, or None when there is no such process or it is a zombie."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if _state(stat) in ("Z", "X") or not raw:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def is_alive(pid: int) -> bool:
    return cmdline(pid) is not None


def uptime_s(pid: int) -> float | None:
    """Seconds since the process started, from its start time in /proc/PID/stat."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        system_uptime = float((PROC / "uptime").read_text().split()[0])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None
    # fields[0] is field 3 (state); starttime is field 22, in clock ticks since boot.
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return max(0.0, system_uptime - started)


def describe(pid: int, width: int = 120) -> str:
    """`pid 1234: java -Xmx512m ... kafka.Kafka server.properties`, shortened to `width` characters."""
    argv = cmdline(pid)
    text = f"pid {pid}: {' '.join(argv)}" if argv else f"pid {pid}"
    return text if len(text) <= width else text[: width - 3] + "..."


def listening_pids(port: int) -> list[int]:
    """Pids of processes with a TCP socket listening on `port` (any address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split()
            if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == _LISTEN:
                inodes.add(parts[9])
    return _pids_with_fd_target({f"socket:[{inode}]" for inode in inodes}) if inodes else []


def lock_holders(path: Path) -> list[int]:
    """Pids holding a flock/fcntl lock on `path`, from /proc/locks."""
    try:
        st = path.stat()
        locks = (PROC / "locks").read_text().splitlines()
    except FileNotFoundError:
        return []
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in locks:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; blocked waiters have "->" after the index.
        if "->" in parts:
            continue
        if len(parts) >= 6 and parts[5] == wanted:
            pids.append(int(parts[4]))
    return pids


def _state(stat: str) -> str:
    return stat.rsplit(")", 1)[1].split()[0]


def _pids_with_fd_target(targets: set[str]) -> list[int]:
    pids = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except (PermissionError, FileNotFoundError, ProcessLookupError):
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    pids.append(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(pids)
