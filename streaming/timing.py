"""Per-stage timings of one image's preprocessing, in milliseconds, for a result's `timings_ms`."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageTimings:
    """Wall time of each preprocessing stage. A decoded-image cache hit has decode = resize = 0."""

    fetch_ms: float = 0.0
    decode_ms: float = 0.0
    resize_ms: float = 0.0
    cache_hit: bool = False

    @property
    def total_ms(self) -> float:
        return self.fetch_ms + self.decode_ms + self.resize_ms

    def as_dict(self) -> dict[str, float]:
        """The keys the results topic uses: fetch, decode, resize."""
        return {"fetch": self.fetch_ms, "decode": self.decode_ms, "resize": self.resize_ms}
