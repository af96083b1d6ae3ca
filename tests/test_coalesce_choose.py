"""Semantic coalescing's choice among many flights in flight: ``Similar.choose`` scores every
leader in one matrix product (the miss path's event loop does this per missed request); the
scores and the choice must be those of a dot product per leader."""

from __future__ import annotations

import numpy as np

from prismcache.config import CategoryPolicy
from prismcache.server.coalesce import Similar

POLICY = CategoryPolicy(threshold=0.9, verifier="none", guards=())


def _similar(vector: np.ndarray, query: str = "q") -> Similar:
    return Similar(group="g", query=query, vector=vector, policy=POLICY)


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    vector = rng.standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_choose_among_fifty_leaders_is_the_nearest_by_each_dot_product() -> None:
    rng = np.random.default_rng(3)
    leaders = [_similar(_unit(rng, 64), f"leader {i}") for i in range(50)]
    target = 37
    near = leaders[target].vector + 0.05 * _unit(rng, 64)
    query = _similar((near / np.linalg.norm(near)).astype(np.float32))
    chosen = query.choose(leaders)
    expected = [float(np.dot(query.vector, leader.vector)) for leader in leaders]
    assert chosen is not None and chosen[0] == target
    assert chosen[0] == int(np.argmax(expected))
    assert abs(chosen[1] - expected[target]) < 1e-6


def test_choose_serves_none_below_the_threshold_whatever_the_number_of_leaders() -> None:
    rng = np.random.default_rng(4)
    query = _similar(_unit(rng, 384))
    leaders = [_similar(_unit(rng, 384), f"leader {i}") for i in range(50)]
    assert max(float(np.dot(query.vector, x.vector)) for x in leaders) < 0.9
    assert query.choose(leaders) is None
    assert query.choose([]) is None
