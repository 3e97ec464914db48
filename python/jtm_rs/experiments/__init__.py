"""The paper's comparison: methods by name (:mod:`.methods`) and the runner that writes
Table 1 and Figure 2 (:mod:`.runner`, ``jtm-rs experiment``)."""

from .methods import METHODS, Budget
from .runner import Experiment

__all__ = ["Experiment", "Budget", "METHODS"]
