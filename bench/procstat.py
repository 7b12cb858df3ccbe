"""What the benchmarks read from ``/proc`` about a server process (Linux only).

One implementation, shared by the harness (bench/run.py: server CPU per message and the CPU of
the servers that are not being measured) and bench/cpu_per_message.py.
"""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, in seconds.

    Args:
        pid: the process (a live one: ``/proc/PID/stat`` must exist).

    Returns:
        utime + stime of ``/proc/PID/stat`` (fields 14 and 15), in seconds: every thread's,
        including threads that have exited, counted in clock ticks (usually 10 ms), so a
        window of a second or more is needed for a precise difference.

    Raises:
        OSError: no such process (or no ``/proc``).
    """
    # The command name (field 2) is in parentheses and may hold spaces: split after its ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
