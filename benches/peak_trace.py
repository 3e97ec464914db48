"""Where a process's resident memory peaks: a daemon thread reads the RSS every few
milliseconds and, at each new high, notes the main thread's Python stack (the frames of
``jtm_rs`` and the bench). ``benches/scale.py --trace-peak`` prints the stacks of the highest
marks, so a peak is found in the code, not guessed from phase totals."""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from typing import List, Tuple

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakTrace:
    """``start()``, then ``report()``: the stacks at the ``top`` highest resident marks that
    were each ``step`` bytes above the last one noted."""

    def __init__(self, interval_s: float = 0.005, step: int = 64 << 20):
        self.interval, self.step = interval_s, step
        self.marks: List[Tuple[int, float, List[str]]] = []
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._t0 = time.perf_counter()

    def start(self) -> "PeakTrace":
        threading.Thread(target=self._run, name="peak-trace", daemon=True).start()
        return self

    def _run(self) -> None:
        high = _rss_bytes()
        while not self._stop.wait(self.interval):
            rss = _rss_bytes()
            if rss < high + self.step:
                continue
            high = rss
            frame = sys._current_frames().get(self._main)
            stack = traceback.extract_stack(frame) if frame is not None else []
            where = [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in stack
                     if "jtm_rs" in f.filename or "benches" in f.filename]
            self.marks.append((rss, time.perf_counter() - self._t0, where[-6:]))

    def report(self, top: int = 5) -> str:
        self._stop.set()
        lines = []
        for rss, t, where in sorted(self.marks, reverse=True)[:top]:
            lines.append(f"{rss / 2**30:.2f} GiB at {t:.1f} s: " + " <- ".join(reversed(where)))
        return "\n".join(lines)
