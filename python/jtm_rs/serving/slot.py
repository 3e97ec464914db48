"""The model a service answers with, and its swap for a new save.

A :class:`Served` is immutable: a loaded :class:`~jtm_rs.JTM`, the fingerprint of the save
it came from and its path. :class:`ModelSlot` holds one; a reload loads the new save beside
it, answers a probe with it, and only then replaces the reference (one assignment, atomic in
Python). A batch takes the reference once, so every answer it gives names the model that made
it, and a model being loaded is never seen. A save that fails to load or to answer is refused
and the old model keeps serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..exceptions import InvalidInputError, JtmError
from ..storage import fingerprint as save_fingerprint


@dataclass(frozen=True)
class Served:
    model: object  # a fitted jtm_rs.JTM
    fingerprint: str
    path: str

    @property
    def n_items(self) -> int:
        return int(self.model.tree.n_items)

    @property
    def int_ids(self) -> bool:
        ids = self.model.item_ids
        return ids is None or ids.is_int


class ReloadRefused(JtmError, ValueError):
    """A save that cannot serve: missing, damaged, or not a JTM; the old model stays."""


def fingerprint(path: Path) -> str:
    """:func:`jtm_rs.storage.fingerprint`, or :class:`ReloadRefused` where there is no save."""
    try:
        return save_fingerprint(path)
    except OSError as e:
        raise ReloadRefused(f"{path}: no saved model ({e.strerror or e})") from None


def load_served(path, n_threads: Optional[int], device: Optional[str] = None) -> Served:
    """Loads and probes the save at ``path``; :class:`ReloadRefused` says why it cannot serve.
    The manifest is read before and after: a save replaced meanwhile is refused, not mixed."""
    from ..jtm import JTM

    path = Path(path)
    before = fingerprint(path)
    try:
        model = JTM.load(path, device=device, n_threads=n_threads)
        model.retrieve(np.full((1, 1), -1, dtype=np.int64), 1)  # the probe: one retrieval
    except (JtmError, OSError, RuntimeError, ValueError, KeyError) as e:
        raise ReloadRefused(f"{path}: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    if fingerprint(path) != before:
        raise ReloadRefused(f"{path}: the save changed while it was loading; try again")
    return Served(model, before, str(path))


class ModelSlot:
    """The :class:`Served` model of a service; :meth:`swap` replaces it whole."""

    def __init__(self, served: Served):
        self._served = served

    @property
    def current(self) -> Served:
        return self._served

    def swap(self, served: Served) -> Served:
        """Puts ``served`` in the slot; returns the one it replaced."""
        if not isinstance(served, Served):
            raise InvalidInputError("only a loaded Served model goes into the slot")
        old, self._served = self._served, served
        return old


__all__ = ["Served", "ModelSlot", "ReloadRefused", "fingerprint", "load_served"]
