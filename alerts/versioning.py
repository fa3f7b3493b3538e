"""Row versions for ReplacingMergeTree tables: wall-clock microseconds, strictly increasing.

Two writes of the same key in one microsecond (two threads, or a write right after a read in
the same tick) must still order correctly, so the counter never repeats within a process; the
wall clock keeps it increasing across restarts.
"""

from __future__ import annotations

import threading
import time

_lock = threading.Lock()
_last = 0


def next_version() -> int:
    """A version greater than every one handed out before in this process.

    >>> a = next_version(); b = next_version()
    >>> b > a
    True
    """
    global _last
    with _lock:
        _last = max(time.time_ns() // 1000, _last + 1)
        return _last
