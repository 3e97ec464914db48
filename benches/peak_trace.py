"""Where a process's resident memory peaks: a daemon thread reads the high-water mark
(``ru_maxrss``) every few milliseconds and, when it rose, notes the main thread's Python stack
(the frames of ``jtm_rs`` and the bench). The thread runs only when it gets the GIL, so a peak
inside a call that holds it (much of numpy) is seen when the call returns: the stack then
names the line after it. ``benches/scale.py --trace-peak`` prints the stacks of the highest
marks, so a peak is found in the code, not guessed from phase totals."""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import traceback
from typing import List, Tuple

def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakTrace:
    """``start()``, then ``report()``: the stacks of the ``top`` highest high-water marks, one
    per line of code, each mark ``step`` bytes above the last one noted."""

    def __init__(self, interval_s: float = 0.005, step: int = 16 << 20):
        self.interval, self.step = interval_s, step
        self.marks: List[Tuple[int, float, List[str]]] = []
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._t0 = time.perf_counter()

    def start(self) -> "PeakTrace":
        self._thread = threading.Thread(target=self._run, name="peak-trace", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        noted = _peak_bytes()
        while not self._stop.wait(self.interval):
            peak = _peak_bytes()
            if peak < noted + self.step:
                continue
            noted = peak
            frame = sys._current_frames().get(self._main)
            stack = traceback.extract_stack(frame) if frame is not None else []
            del frame  # a frame held here would keep the main thread's locals alive
            where = [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in stack
                     if "jtm_rs" in f.filename or "benches" in f.filename]
            self.marks.append((peak, time.perf_counter() - self._t0, where[-6:]))

    def report(self, top: int = 8) -> str:
        self._stop.set()
        self._thread.join()
        highest: dict = {}  # the highest mark at each line (the innermost frame)
        for mark in self.marks:
            key = mark[2][-1] if mark[2] else ""
            if key not in highest or mark[0] > highest[key][0]:
                highest[key] = mark
        lines = []
        for rss, t, where in sorted(highest.values(), reverse=True)[:top]:
            lines.append(f"{rss / 2**30:.2f} GiB at {t:.1f} s: " + " <- ".join(reversed(where)))
        return "\n".join(lines)
