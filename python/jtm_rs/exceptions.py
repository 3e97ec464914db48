"""The exceptions jtm_rs raises. The Rust core maps its one error enum onto these.

``JtmError`` is the base; the subclasses also derive from the builtin a caller would
naturally catch (``ValueError`` for bad input, ``RuntimeError`` for internal faults).
File-system problems surface as the usual ``OSError`` subclasses.
"""

from __future__ import annotations


class JtmError(Exception):
    """Base class of every jtm_rs error."""


class InvalidInputError(JtmError, ValueError):
    """An argument is out of range or inconsistent (arity < 2, d < 1, empty corpus, bad node id...)."""


class UnknownItemError(InvalidInputError):
    """An item id that the tree does not hold."""


class DataFormatError(InvalidInputError):
    """A data file that cannot be read as asked: a bad row, a missing column, an unparsable value.

    ``path``, ``line`` (1-based physical line, None when unknown) and ``column`` name the place.
    """

    def __init__(self, message: str, *, path=None, line=None, column=None):
        super().__init__(message)
        self.path, self.line, self.column = path, line, column


class CallbackError(JtmError, ValueError):
    """``weights_fn`` or ``score_fn`` returned a wrong type, dtype or shape, or NaN values."""


class CorruptTreeError(JtmError, ValueError):
    """A tree file or byte string that is truncated, corrupted or of an unknown format version."""


class CorruptModelError(JtmError, ValueError):
    """A saved model directory with an unreadable part (truncated or malformed JSON, a
    config that does not describe a model); the message names the file."""


class RankLostError(JtmError, RuntimeError):
    """A distributed run lost one of its ranks: it died, or did not answer within the rank
    timeout. Every other rank ends with this error instead of waiting forever."""


class JtmInternalError(JtmError, RuntimeError):
    """A broken invariant inside jtm_rs: a bug, please report it."""


__all__ = [
    "JtmError",
    "InvalidInputError",
    "UnknownItemError",
    "DataFormatError",
    "CallbackError",
    "CorruptTreeError",
    "CorruptModelError",
    "RankLostError",
    "JtmInternalError",
]
