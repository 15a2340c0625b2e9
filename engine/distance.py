"""Qdrant's distance conventions.

Internally every search ranks by a similarity where higher is better. Cosine normalises
vectors on write (and reads return the normalised vector); Dot is the raw inner product;
Euclid reports the L2 distance (with sqrt) and Manhattan the L1 distance, both ascending.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import BadRequest
from gpu.flat import Metric


@dataclass(frozen=True)
class Distance:
    name: str
    metric: Metric  # gpu.flat's name for the ranking
    normalise: bool
    higher_is_better: bool

    def prepare(self, vectors: np.ndarray, sq_norms: np.ndarray | None = None) -> np.ndarray:
        """Vectors as stored/queried (Cosine: unit length; zero vectors stay zero).
        `sq_norms`: the rows' squared norms, when the caller has them already."""
        if not self.normalise:
            return vectors
        if sq_norms is None:
            sq_norms = np.einsum("ij,ij->i", vectors, vectors)
        norms = np.sqrt(sq_norms)[:, None]
        norms[norms == 0] = 1.0
        return vectors / norms

    def to_score(self, sim: np.ndarray) -> np.ndarray:
        return sim if self.higher_is_better else -sim

    def threshold_to_sim(self, threshold: float) -> float:
        return threshold if self.higher_is_better else -threshold


DISTANCES = {
    "Cosine": Distance("Cosine", "ip", True, True),
    "Dot": Distance("Dot", "ip", False, True),
    "Euclid": Distance("Euclid", "l2", False, False),
    "Manhattan": Distance("Manhattan", "l1", False, False),
}


def get_distance(name: object) -> Distance:
    try:
        return DISTANCES[name]  # type: ignore[index]
    except (KeyError, TypeError):
        raise BadRequest(
            f"unknown distance {name!r}, expected one of Cosine, Euclid, Dot, Manhattan"
        ) from None
