"""Progress and messages: tqdm bars on a terminal, log lines everywhere else.

Every message goes through the ``logging`` logger ``"jtm_rs"`` (``say``). A long phase uses
:func:`bar`: a tqdm bar when stderr is a terminal; otherwise (a log file, CI, ``nohup``,
``| tee``) a line when the phase ends with its elapsed time and, while it runs, a line
every ``interval`` seconds (30 by default, ``JTM_PROGRESS_INTERVAL`` overrides) — never
minutes of silence.

A library should not configure logging, but ``show_progress=True`` asks for output: when
neither the ``jtm_rs`` logger nor the root logger has a handler, :func:`ensure_handler`
adds one that prints the bare message to stderr (through ``tqdm.write``, so bars stay
intact). An application that configures logging itself gets the records its own way.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Optional

logger = logging.getLogger("jtm_rs")


class TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


_default_handler: Optional[logging.Handler] = None


def ensure_handler() -> None:
    """Makes INFO messages visible when the application set up no logging."""
    global _default_handler
    if _default_handler is not None or logger.handlers or logging.getLogger().handlers:
        return
    _default_handler = TqdmHandler()
    _default_handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_default_handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def say(msg: str, *args) -> None:
    logger.info(msg, *args)


def _interval() -> float:
    try:
        return float(os.environ.get("JTM_PROGRESS_INTERVAL", "30"))
    except ValueError:
        return 30.0


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class LogBar:
    """The tqdm calls jtm_rs makes (``update``, ``set_postfix``, ``total``, ``close``), as
    log lines: one every ``interval`` seconds while running, one at the end."""

    def __init__(self, total: Optional[float], desc: str, unit: str, interval: Optional[float] = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self.postfix = ""
        self.interval = _interval() if interval is None else interval
        self.start = self.last = time.perf_counter()
        self.closed = False

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            say("%s: %s (%.0f s)", self.desc, self._count(), now - self.start)

    def set_postfix(self, refresh: bool = True, **kw) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in kw.items())

    def _count(self) -> str:
        done = f"{_human(self.n)}/{_human(self.total)} {self.unit}" if self.total else f"{_human(self.n)} {self.unit}"
        return done + (f", {self.postfix}" if self.postfix else "")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            say("%s: %s in %.1f s", self.desc, self._count(), time.perf_counter() - self.start)

    def __enter__(self) -> "LogBar":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        self.closed = True


def _human(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


def bar(total: Optional[float] = None, desc: str = "", unit: str = "it", *, show: bool = True, **tqdm_kw):
    """A progress bar for a long phase: tqdm on a terminal, :class:`LogBar` otherwise, and a
    disabled tqdm (no output) when ``show`` is false."""
    from tqdm.auto import tqdm

    if not show:
        return tqdm(total=total, desc=desc, unit=unit, disable=True)
    ensure_handler()
    if _is_terminal():
        return tqdm(total=total, desc=desc, unit=unit, **tqdm_kw)
    return LogBar(total, desc, unit)



def setup_cli_output(quiet: bool, verbose: bool) -> None:
    """The command line's messages through logging to stderr; warnings as one line."""
    import warnings

    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logger = logging.getLogger("jtm_rs")
    if not logger.handlers:
        handler = TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    # formatwarning, not showwarning: warnings.catch_warnings(record=True) still records.
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"jtm-rs: warning: {message}\n"


__all__ = ["logger", "say", "bar", "ensure_handler", "LogBar", "setup_cli_output"]
