"""What a loader read and dropped: kept with the data (``Interactions.report``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List


@dataclass
class LoadReport:
    """What a loader read, dropped and why (``Interactions.report``)."""

    path: str
    rows: int = 0
    bad_rows_skipped: int = 0
    blank_lines: int = 0
    filtered_out: int = 0
    duplicates_dropped: int = 0
    seconds: float = 0.0
    first_bad_rows: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{self.path}: {self.rows} rows kept in {self.seconds:.1f} s"]
        for name, n in (
            ("bad rows skipped", self.bad_rows_skipped),
            ("filtered out", self.filtered_out),
            ("duplicate rows dropped", self.duplicates_dropped),
            ("blank lines", self.blank_lines),
        ):
            if n:
                parts.append(f"{n} {name}")
        return ", ".join(parts)
