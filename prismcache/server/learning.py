"""Labels from the proxy's own traffic, at no extra upstream cost (:mod:`prismcache.labels`).

For a category with ``target_precision`` set, a request becomes a **probe** when:

- it missed because the verifier rejected a grey-zone candidate: it goes upstream anyway;
- or (``explore_rate`` of the time, never while the upstream is overloaded) the verifier
  *accepted* a grey-zone candidate: the hit is not served, the request goes upstream instead
  (an explored request is a miss: it serves nothing wrong; it costs one upstream call).

When the fresh answer arrives, :func:`record` compares it with the candidate's stored
answer (:func:`~prismcache.labels.answers_agree`) on a worker thread, off the response path,
and records the label through the cache's calibrator (which stores it and updates the learned
cut-off). A store or embedder that fails there is logged and counted; the request is not
affected. :class:`RecentHits` remembers the last semantic hits so that feedback on one of them
(``POST /admin/feedback``) can be labelled with the probability the decision saw.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from prismcache.errors import PrismCacheError
from prismcache.labels import Label, Probe, answers_agree, probe_of
from prismcache.responses import response_text
from prismcache.results import Hit, Miss
from prismcache.streams import completion_of

if TYPE_CHECKING:
    from prismcache.calibration import Calibrator
    from prismcache.server.state import ProxyState

__all__ = ["Probe", "RecentHits", "label_failed", "probe_for", "record"]

log = logging.getLogger("prismcache.server")


def calibrator_of(state: ProxyState) -> Calibrator | None:
    """The cache's calibrator, when a category is calibrated."""
    return state.cache.policies.calibration


def probe_for(state: ProxyState, result: Hit | Miss | None, *, tenant: str, query: str,
              model: str, rng: random.Random | None = None) -> Probe | None:
    """The probe ``result`` makes (:func:`~prismcache.labels.probe_of`) when its category is
    calibrated, exploring only while the upstream is not overloaded; else ``None``. For an
    explored hit the caller must forward the request instead of serving the hit."""
    calibrator = calibrator_of(state)
    if calibrator is None or result is None or result.category is None:
        return None
    policy = state.cache.policy_for(result.category, model)
    if policy.target_precision is None or (isinstance(result, Hit)
                                           and _overloaded(state, model)):
        return None
    return probe_of(result, policy, tenant=tenant, query=query,
                    explore=(rng or random).random)


def _overloaded(state: ProxyState, model: str) -> bool:
    return state.adaptive is not None and state.adaptive.controller.level(model) > 0.0


async def record(state: ProxyState, probe: Probe, answer: Any) -> None:
    """Label ``probe`` from the fresh ``answer`` (an OpenAI response body) on a worker thread.
    Meant to run off the response path, as work after the reply
    (:class:`~prismcache.server.background.AfterReply`, which drains it at shutdown). A store
    or embedder that fails is counted and logged: the request was answered, the label is
    lost."""
    fresh = response_text(answer) if isinstance(answer, dict) else None
    if fresh is None:
        return
    try:
        await state.in_thread(label_from_answer, state, probe, fresh)
    except PrismCacheError as exc:
        label_failed(state, exc)


def label_failed(state: ProxyState, exc: BaseException) -> None:
    """Count and log a label that could not be recorded."""
    state.metrics.cache_errors.inc("label")
    log.warning("label not recorded (%s: %s)", type(exc).__name__, exc)


def label_from_answer(state: ProxyState, probe: Probe, fresh: str) -> Label | None:
    """Compare ``fresh`` with the probe's stored answer and record the label; ``None`` when the
    entry is gone or the rule cannot tell. Raises :class:`PrismCacheError` subclasses."""
    calibrator = calibrator_of(state)
    entry = state.cache.document_store.get(probe.entry_id)
    if calibrator is None or entry is None or entry.tenant != probe.tenant:
        return None
    stored = response_text(completion_of(entry.response, entry.chunks))
    same = None if stored is None else answers_agree(fresh, stored, state.cache.embedder.embed)
    if same is None:
        return None
    label = probe.label(entry.query, same)
    calibrator.record(label)
    return label


class RecentHits:
    """The last ``size`` semantic hits by entry id and response id: what feedback on a hit is
    labelled with (the query and the probability the decision saw). Thread-safe."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._hits: OrderedDict[str, Probe] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, hit: Hit, *, tenant: str, query: str) -> None:
        """Note a served semantic hit."""
        if hit.tier != "semantic":
            return
        probe = Probe(tenant=tenant, category=hit.category, query=query, entry_id=hit.entry_id,
                      similarity=hit.similarity, probability=(1.0 if hit.probability is None
                                                              else hit.probability),
                      source="feedback")
        keys = [f"e:{hit.entry_id}"]
        if isinstance(hit.response.get("id"), str):
            keys.append(f"r:{hit.response['id']}")
        with self._lock:
            for key in keys:
                self._hits[key] = probe
                self._hits.move_to_end(key)
            while len(self._hits) > self._size:
                self._hits.popitem(last=False)

    def find(self, *, entry_id: int | None = None, response_id: str | None = None
             ) -> Probe | None:
        """The last hit served from ``entry_id`` or with ``response_id``, or ``None``."""
        key = f"e:{entry_id}" if entry_id is not None else f"r:{response_id}"
        with self._lock:
            return self._hits.get(key)
