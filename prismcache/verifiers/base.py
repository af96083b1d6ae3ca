"""The verifier seam: given a query and candidates near it, the probability that each
candidate's stored answer serves the query.

A verifier sees more than one pooled cosine (both texts, their vectors), so it can tell a
paraphrase from a near-miss that an embedding scores as a near-duplicate ("cancel my plan" /
"don't cancel my plan"). Its output is a calibrated probability; a category's ``cutoff``
applies to it (:func:`prismcache.decision.decide`). Verifiers are chosen by a spec string
(:func:`prismcache.verifiers.open_verifier`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from prismcache.decision import Candidate, Query

__all__ = ["Verifier"]


@runtime_checkable
class Verifier(Protocol):
    """Contract of every verifier.

    Attributes:
        name: stable identifier, shown in ``explain`` and reports.
    """

    name: str

    def probabilities(self, query: Query, candidates: Sequence[Candidate]) -> np.ndarray:
        """One probability in ``[0, 1]`` per candidate, in order: how likely the answer stored
        for the candidate's text serves ``query``. Must not depend on anything but the texts
        and vectors given (no cross-partition state). Raises
        :class:`~prismcache.errors.VerifierError` on failure (the cache fails open: a miss)."""
        ...
