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


def ask_as(proxy: Proxy, key: str, text: str = "How do I reset my password?") -> None:
    with proxy.http(api_key=key) as http:
        assert http.post("/v1/chat/completions",
                         json={"model": "m1", "messages": user(text)}).status_code == 200


def metrics_text(proxy: Proxy, token: str | None = None) -> str:
    status, body = raw_request(proxy, "GET", "/metrics", key=token)
    assert status == 200, body
    return body["text"]


def test_metrics_labels_stay_bounded_whatever_keys_clients_send(make_proxy) -> None:
    proxy = make_proxy()  # pass-through mode: every client key is a tenant of its own
    ask_as(proxy, "sk-first")
    proxy.settle()  # the store after the reply is counted too (it may wait for company)
    before = metrics_text(proxy)
    for i in range(40):
        ask_as(proxy, f"sk-random-{i}", f"question number {i} about kettles")
    proxy.settle()
    after = metrics_text(proxy)
    assert "key-" not in after and 'tenant="other"' in after
    series = {line.rsplit(" ", 1)[0] for line in after.splitlines() if not line.startswith("#")}
    assert series == {line.rsplit(" ", 1)[0] for line in before.splitlines()
                      if not line.startswith("#")}


def test_configured_tenants_are_labels_and_strangers_are_not(make_proxy) -> None:
    proxy = make_proxy(server={"tenants": [{"tenant": "acme", "key": "sk-acme"}]})
    ask_as(proxy, "sk-acme")
    raw_request(proxy, "POST", "/v1/chat/completions", key="sk-stranger",
                body={"model": "m1", "messages": user("hi")})
    text = metrics_text(proxy)
    assert 'tenant="acme"' in text and "stranger" not in text


def test_metrics_can_be_protected_by_a_token(make_proxy) -> None:
    proxy = make_proxy(server={"metrics_token_env": "METRICS", "admin_token_env": "ADMIN"},
                       environ={"METRICS": "metrics-secret", "ADMIN": "admin-secret"})
    for token in (None, "sk-client-a", "wrong"):
        status, body = raw_request(proxy, "GET", "/metrics", key=token)
        assert status == 401 and body["error"]["code"] == "invalid_metrics_token"
    assert "prismcache_requests_total" in metrics_text(proxy, "metrics-secret")
    assert "prismcache_requests_total" in metrics_text(proxy, "admin-secret")


# -- the rest of the OpenAI API is forwarded, uncached, with the same tenant rules -------------

@pytest.mark.parametrize("prompt", [["one", "two"], [1, 2, 3], [[1, 2], [3, 4]]])
def test_batched_and_token_id_prompts_pass_through_uncached(make_proxy, upstream,
                                                            prompt: Any) -> None:
    proxy = make_proxy()
    for _ in range(2):
        with proxy.http() as http:
            raw = http.post("/v1/completions", json={"model": "m1", "prompt": prompt})
        assert raw.status_code == 200 and raw.headers["x-prism-cache"] == "bypass"
    assert upstream.calls["completions"] == 2 and proxy.entries() == 0


@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/responses"), ("GET", "/v1/responses/resp_123"),
    ("POST", "/v1/moderations"), ("POST", "/v1/images/generations"),
    ("POST", "/v1/audio/speech"), ("GET", "/v1/models/m1"),
])
def test_the_openai_surface_is_forwarded(make_proxy, upstream, method: str, path: str) -> None:
    proxy = make_proxy(server=TENANTS, environ=SECRETS)
    status, body = raw_request(proxy, method, path, body={"model": "m1", "input": "hi"}
                               if method == "POST" else None)
    assert status == 200 and body["path"] == path
    assert upstream.others == [(method, path, f"Bearer {UPSTREAM_KEY}")]
    assert raw_request(proxy, method, path, key="sk-stranger")[0] == 401
    assert len(upstream.others) == 1


def test_uploads_stream_through_with_their_content_type_and_query(make_proxy, upstream) -> None:
    proxy = make_proxy()
    with proxy.http() as http:
        raw = http.post("/v1/audio/transcriptions?timestamp_granularities=word",
                        files={"file": ("a.wav", b"RIFF" + bytes(5000), "audio/wav")},
                        data={"model": "whisper-1"})
    assert raw.status_code == 200 and raw.headers["x-prism-cache"] == "bypass"
    echo = raw.json()
    assert echo["content_type"].startswith("multipart/form-data; boundary=")
    assert echo["bytes"] > 5000 and echo["query"] == "timestamp_granularities=word"


def test_account_wide_objects_are_not_shared_on_the_proxy_key(make_proxy, upstream) -> None:
    shared = make_proxy(server=TENANTS, environ=SECRETS)
    for path in ("/v1/files", "/v1/batches", "/v1/chat/completions"):
        status, body = raw_request(shared, "GET", path)
        assert status == 403 and body["error"]["code"] == "shared_upstream_objects"
    assert upstream.others == []
    allowed = make_proxy(server={**TENANTS, "share_upstream_objects": True}, environ=SECRETS)
    assert raw_request(allowed, "GET", "/v1/files")[0] == 200
    own_keys = make_proxy()  # pass-through: each client's own key scopes its own account
    assert raw_request(own_keys, "GET", "/v1/files", key="sk-own")[0] == 200
    assert upstream.others[-1] == ("GET", "/v1/files", "Bearer sk-own")


def test_unknown_endpoints_are_not_forwarded(make_proxy, upstream) -> None:
    proxy = make_proxy()
    for path in ("/v1/admin/secrets", "/v1/nope"):
        status, body = raw_request(proxy, "GET", path)
        assert status == 404 and body["error"]["code"] == "invalid_path"
    assert upstream.others == []


def test_model_names_clients_invent_do_not_grow_the_load_metrics(make_proxy) -> None:
    from prismcache.server.metrics import MODEL_LABELS

    proxy = make_proxy({"adaptive": {"enabled": True}})
    with proxy.http() as http:
        for i in range(MODEL_LABELS + 20):
            assert http.post("/v1/chat/completions", json={
                "model": f"model-{i}", "messages": user("hi")}).status_code == 200
    text = metrics_text(proxy)
    levels = [line for line in text.splitlines() if line.startswith("prismcache_load_level{")]
    assert len(levels) == MODEL_LABELS + 1 and 'model="other"' in text
