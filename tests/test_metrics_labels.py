"""Label values named by clients are bounded in every proxy metric (no unbounded series)."""

from __future__ import annotations

import pytest

from prismcache.server.metrics import OTHER, Counter, ProxyMetrics


def _metrics() -> ProxyMetrics:
    return ProxyMetrics(tenants=["acme"], categories=["code"])


@pytest.mark.parametrize("name", [m.name for m in _metrics().all() if "tenant" in m.labels])
def test_an_unknown_tenant_is_counted_as_other(name: str) -> None:
    metrics = _metrics()
    metric = next(m for m in metrics.all() if m.name == name)
    labels = tuple("key-0123456789abcdef" if label == "tenant" else "x" for label in metric.labels)
    if isinstance(metric, Counter):
        metric.inc(*labels)
    else:
        metric.observe(0.01, *labels)
    text = "\n".join(metric.samples())
    assert "key-0123456789abcdef" not in text
    assert f'tenant="{OTHER}"' in text
