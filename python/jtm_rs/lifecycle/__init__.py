"""The model lives on: new behaviours, new items and retired items without a fit from scratch
(:func:`update`, behind :meth:`jtm_rs.JTM.update`), and where new items go in the tree
(:mod:`.placement`)."""

from .retired import RetiredItems
from .update import UpdateRecord, update

__all__ = ["RetiredItems", "UpdateRecord", "update"]
