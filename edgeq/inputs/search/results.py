"""What a disagreement search returns: the inputs it found (``Found``) and how it went (``SearchResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeq.errors import EdgeqError


@dataclass
class Found:
    """One input on which the models disagree."""

    arrays: list[np.ndarray]  # one sample per model input, in the data's dtypes
    seed_index: int  # the data row it was grown from
    distance: float  # relative to the data range, in the chosen norm
    query: int  # the query that found it (1-based)
    score: float
    float_class: int | None = None
    quant_class: int | None = None
    operators: list[str] = field(default_factory=list)  # what changed the seed into it, in order


@dataclass
class SearchResult:
    found: list[Found]
    queries: int
    elapsed_s: float
    stopped: str  # budget | time | seeds | first | interrupted
    complete: bool
    objective: dict
    operators: dict  # name -> {"tries", "improved", "flips"}
    seeds_tried: int
    error: EdgeqError | BaseException | None = None
    notes: list[str] = field(default_factory=list)
    strategy: dict = field(default_factory=dict)  # the seeking / climbing split and the crossings behind it
    unusable: int = 0  # candidates the float model gave NaN or Inf on: neither disagreements nor agreements

    @property
    def first_flip_query(self) -> int | None:
        return min((f.query for f in self.found), default=None)

    def summary(self) -> dict:
        return {"found": len(self.found), "queries": self.queries, "elapsed_s": round(self.elapsed_s, 3),
                "stopped": self.stopped, "complete": self.complete, "first_flip_query": self.first_flip_query,
                "seeds_tried": self.seeds_tried, "objective": self.objective, "operators": self.operators,
                "queries_per_s": round(self.queries / self.elapsed_s, 1) if self.elapsed_s > 0 else None,
                "distances": [round(f.distance, 6) for f in self.found], "notes": list(self.notes),
                "strategy": dict(self.strategy), "unusable": self.unusable,
                **({"error": str(self.error)} if self.error is not None else {})}
