"""The interface every method shares: :class:`jtm_rs.JTM`, the baselines and the brute-force
"DNN" row alike, so that the experiment runner, the command line and users treat them the same.

* ``fit(split)`` learns from the training users (validation users may be used for choices);
* ``recommend(behaviours, M)`` speaks the data's own item ids (one history per user);
* ``retrieve(features, M)`` takes internal ids, as a :class:`~jtm_rs.data.Split` holds them
  (most recent first, ``PAD`` padded) and returns ``(ids int64[n, M], scores float32[n, M])``;
* ``evaluate(users, M)`` applies the paper's protocol with the one shared P/R/F@M code, so every
  row of Table 1 is measured alike;
* ``save(path)`` / ``Recommender.load(path)`` keep a fitted method in a directory (atomic, with
  a checksummed manifest: :mod:`jtm_rs.storage`).

No method filters out items the user already has unless asked: the ground truth (second half
of the user's behaviours) may repeat them, and the paper's protocol counts such hits. It
applies to all methods alike. (``JTM.recommend(exclude_history=True)`` leaves them out inside
the beam search, as the service does.)
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .data import MAX_BEHAVIOURS, PAD, EvaluationUsers, Interactions, Split
from .encoding import encode_behaviours
from .exceptions import CorruptModelError, InvalidInputError
from .ids import IdMap
from .metrics import precision_recall_f
from .storage import read_json, read_parts, write_parts

#: Called after each round of a method that learns in rounds (JTM's joint loop), with that
#: round's record, while the model is usable; returning ``False`` stops fitting there.
FitCallback = Callable[[Any], object]


class Recommender(ABC):
    """Base class of every method. Subclasses implement :meth:`fit`, :meth:`retrieve`,
    :meth:`known_items` and, to be saved, :meth:`get_params` / :meth:`state` /
    :meth:`set_state` (JTM overrides :meth:`save` and :meth:`load` with its own layout)."""

    #: The method's name in Table 1.
    name: str = "?"
    #: The map from internal item ids back to the data's (None: the ids are their own).
    item_ids: Optional[IdMap] = None
    #: Behaviours per user that :meth:`recommend` keeps (the most recent ones).
    max_behaviours: int = MAX_BEHAVIOURS
    #: One record per round or pass of fitting, for methods that fit in several.
    history: Sequence[Any] = ()

    @abstractmethod
    def fit(self, split: Split, *, show_progress: bool = True, callback: Optional[FitCallback] = None) -> "Recommender":
        """Learns from ``split.train``; returns ``self``."""

    @abstractmethod
    def retrieve(self, features: np.ndarray, M: int, **kwargs) -> Tuple[np.ndarray, np.ndarray]:
        """``(internal item ids int64[n, M], scores float32[n, M])``, best first."""

    @abstractmethod
    def known_items(self, items: np.ndarray) -> np.ndarray:
        """Which internal item ids (any shape) the fitted method can take as behaviours."""

    def recommend(self, behaviours, M: int = 200, *, on_unknown: str = "raise", pad=PAD, **kwargs):
        """Top-``M`` items per user, best first, in the data's own item ids:
        ``(item_ids [n, M], scores float32[n, M])``.

        ``behaviours`` is either a list with one time-ordered sequence of item ids per user
        (oldest first, any length) or an array ``[n_users, W]`` of item ids, most recent first,
        padded with ``pad``. Items the method does not know raise :class:`UnknownItemError`
        (``on_unknown="raise"``) or are dropped (``"ignore"``). Other keyword arguments go to
        :meth:`retrieve`. Empty result slots are ``-1`` (or ``""`` for string ids)."""
        feats = encode_behaviours(behaviours, self.item_ids, self.known_items, self.max_behaviours,
                                  on_unknown=on_unknown, pad=pad)
        ids, scores = self.retrieve(feats, M, **kwargs)
        return (self.item_ids.decode(ids) if self.item_ids is not None else ids), scores

    def evaluate(self, users: Union[Interactions, EvaluationUsers], M: int = 200, **kwargs) -> Dict[str, float]:
        """Averages of ``precision``, ``recall``, ``f_measure`` @M over ``users``, plus
        ``n_users`` (paper protocol: features are the first half of each user's behaviours,
        the ground truth the distinct items of the second half; internal ids, as split).
        Keyword arguments go to :meth:`retrieve`."""
        ev = users if isinstance(users, EvaluationUsers) else users.evaluation_users(self.max_behaviours)
        if len(ev) == 0:
            raise InvalidInputError("no evaluation users (each needs at least 2 behaviours)")
        ids, _ = self.retrieve(ev.features, M, **kwargs)
        return precision_recall_f(ids, ev.truth_indptr, ev.truth_items)

    # --- persistence --------------------------------------------------------------------------

    def get_params(self) -> Dict[str, Any]:
        """The constructor's keyword arguments (JSON values) that rebuild this method."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def state(self) -> Dict[str, np.ndarray]:
        """What :meth:`fit` learned, as named numpy arrays."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        """Restores what :meth:`state` returned, on an instance built from :meth:`get_params`."""
        raise NotImplementedError(f"{type(self).__name__} cannot be loaded")

    def save(self, path: Union[str, PathLike]) -> None:
        """Saves the fitted method into the directory ``path``, atomically as a whole."""
        meta = {"class": f"{type(self).__module__}.{type(self).__qualname__}", "params": self.get_params()}
        state = self.state()
        parts: Dict[str, Tuple[str, Callable[[Path], None]]] = {
            "recommender": (".json", lambda p: p.write_bytes(json.dumps(meta, indent=1).encode())),
            "state": (".npz", lambda p: _save_npz(p, state)),
        }
        if self.item_ids is not None:
            parts["item_ids"] = (".npz", self.item_ids.save)
        write_parts(Path(path), parts)

    @classmethod
    def load(cls, path: Union[str, PathLike], **kwargs) -> "Recommender":
        """Reads what :meth:`save` wrote (nothing is unpickled). ``Recommender.load`` returns
        whichever method was saved; a subclass's ``load`` insists on that subclass."""
        files = read_parts(Path(path), required=("recommender", "state"))
        meta = read_json(files["recommender"])
        try:
            module, _, name = meta["class"].rpartition(".")
            klass = getattr(importlib.import_module(module), name)
            if not (isinstance(klass, type) and issubclass(klass, cls)):
                raise TypeError(f"{meta['class']} is not a {cls.__name__}")
            self = klass(**meta["params"], **kwargs)
            with np.load(files["state"], allow_pickle=False) as z:
                self.set_state({k: z[k] for k in z.files})
        except (KeyError, TypeError, ValueError, ImportError, AttributeError) as e:
            raise CorruptModelError(f"{path}: not a saved recommender ({e})") from None
        if "item_ids" in files:
            self.item_ids = IdMap.load(files["item_ids"])
        return self


def _save_npz(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def top_m(scores: np.ndarray, M: int) -> Tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``M`` largest entries per row, best first."""
    M = min(M, scores.shape[1])
    part = np.argpartition(-scores, M - 1, axis=1)[:, :M]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64), np.take_along_axis(vals, order, axis=1).astype(np.float32)


__all__ = ["Recommender", "FitCallback", "top_m"]
