"""The proxy's security boundaries under a real uvicorn: which paths reach the upstream with
which credential, who may read /metrics, and what a tenant cannot make the proxy do."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from fake_upstream import FakeUpstream
from proxy_support import UPSTREAM_KEY, Proxy, make_proxy, upstream, user  # noqa: F401

TENANTS = {"tenants": [{"tenant": "acme", "key": "sk-acme"}],
           "upstream_api_key_env": "UPSTREAM_KEY"}
SECRETS = {"UPSTREAM_KEY": UPSTREAM_KEY}


def raw_request(proxy: Proxy, method: str, path: str, *, key: str | None = "sk-acme",
                body: Any = None) -> tuple[int, dict[str, Any]]:
    """Send ``path`` byte for byte (no client-side normalisation of ``..`` or escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.server.port, timeout=10)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["content-type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(payload)
    except ValueError:
        return response.status, {"text": payload.decode("utf-8", "replace")}


TRAVERSALS = [
    "/v1/models/../files",
    "/v1/models/%2e%2e/files",
    "/v1/models/%2E%2E/files",
    "/v1/models/.%2e/files",
    "/v1/models/..%2ffiles",
    "/v1/models/m1%2f..%2f..%2ffiles",
    "/v1/models/m1/../../files",
    "/v1/models/..%5cfiles",
    "/v1/models/%252e%252e/files",
    "/v1/models/./../files",
    "/v1/models//files",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_path_escapes_v1_with_the_upstream_key(make_proxy, upstream: FakeUpstream,
                                                  path: str) -> None:
    proxy = make_proxy(server=TENANTS, environ=SECRETS)
    status, body = raw_request(proxy, "GET", path)
    assert status in (400, 404), (status, body)
    assert body["error"]["code"] == "invalid_path"
    assert upstream.others == [] and upstream.calls["models"] == 0


def test_plain_model_paths_still_pass_through(make_proxy, upstream: FakeUpstream) -> None:
    proxy = make_proxy(server=TENANTS, environ=SECRETS)
    status, body = raw_request(proxy, "GET", "/v1/models/meta-llama%3ALlama-3.1-8B")
    assert status == 200 and body["path"] == "/v1/models/meta-llama%3ALlama-3.1-8B"
    assert upstream.others == [("GET", "/v1/models/meta-llama%3ALlama-3.1-8B",
                                f"Bearer {UPSTREAM_KEY}")]
    # a stranger never gets the proxy's key attached to anything
    status, _ = raw_request(proxy, "GET", "/v1/models/m1", key="sk-stranger")
    assert status == 401 and len(upstream.others) == 1
