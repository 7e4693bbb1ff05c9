"""Fault injection for the durability tests.

``REPORTGEN_KILL_AT="NAME[:N][ in PARENT]"`` kills the run with SIGKILL (as a crash or
an out-of-memory kill would: no clean-up, nothing flushed) at the N-th (1 by default)
checkpoint called NAME, counting only those while phase PARENT is open if one is named.
Every phase of the run is a checkpoint as it is entered (``timing.Phases``), and so is
every page the render writes (``page``), so a test can stop a run at a chosen point of
any phase (batches, run-wide views, tables, render) by the run's own progress, not by
timing. Unset, it costs a dictionary look-up.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Sequence

ENV = "REPORTGEN_KILL_AT"
_seen: Counter = Counter()  # checkpoints passed in this process, by spec


def parse(spec: str) -> tuple[str, int, str]:
    """``(name, n, parent)`` of a ``NAME[:N][ in PARENT]`` spec (phase names may hold ':')."""
    head, _, parent = spec.partition(" in ")
    name, sep, count = head.rpartition(":")
    if not sep or not count.strip().isdigit():
        name, count = head, "1"
    return name.strip(), int(count), parent.strip()


def checkpoint(name: str, open_phases: Sequence[str] = ()) -> None:
    """Kill this process here if ``REPORTGEN_KILL_AT`` names this point."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted, nth, parent = parse(spec)
    if name == wanted and (not parent or parent in open_phases):
        _seen[spec] += 1
        if _seen[spec] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
