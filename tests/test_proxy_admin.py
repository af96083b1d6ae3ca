"""The admin API, the proxy's settings, and the serve command's wiring."""

from __future__ import annotations

import httpx
import pytest

from prismcache import ConfigError
from prismcache.server import ServerSettings
from prismcache.server.cli import register
from proxy_support import ADMIN_TOKEN, Proxy, make_proxy, upstream, user  # noqa: F401

ASKED = "How do I reset my password?"
ADMIN = {"server": {"admin_token_env": "PRISM_ADMIN"}, "environ": {"PRISM_ADMIN": ADMIN_TOKEN}}


def as_admin(token: str | None) -> dict[str, str]:
    return {} if token is None else {"authorization": f"Bearer {token}"}


def ask(proxy: Proxy, text: str = ASKED) -> httpx.Response:
    with proxy.http() as http:
        return http.post("/v1/chat/completions", json={"model": "m1", "messages": user(text)})


@pytest.mark.parametrize("path,method", [("/admin/stats", "GET"), ("/admin/invalidate", "POST"),
                                         ("/admin/feedback", "POST")])
def test_admin_needs_the_token(make_proxy, path, method) -> None:
    proxy = make_proxy(**ADMIN)
    ask(proxy)
    with proxy.http(api_key=None) as http:
        for token in (None, "wrong-token", "sk-client-a"):
            raw = http.request(method, path, headers=as_admin(token), json={"all": True})
            assert raw.status_code == 401, token
            assert raw.json()["error"]["code"] == "invalid_admin_token"
    assert proxy.entries() == 1
    with proxy.http() as http:
        ok = http.request(method, path, headers=as_admin(ADMIN_TOKEN),
                          json={"entry": ask(proxy).headers["x-prism-entry"]})
    assert ok.status_code == 200


def test_admin_is_disabled_without_a_token(make_proxy) -> None:
    proxy = make_proxy(server={"admin_token_env": "UNSET_VARIABLE"})
    with proxy.http() as http:
        raw = http.get("/admin/stats", headers=as_admin("anything"))
    assert raw.status_code == 404 and raw.json()["error"]["code"] == "admin_disabled"


def test_stats(make_proxy) -> None:
    proxy = make_proxy(**ADMIN)
    ask(proxy)
    ask(proxy)
    with proxy.http() as http:
        stats = http.get("/admin/stats", headers=as_admin(ADMIN_TOKEN)).json()
    loose = stats["categories"]["loose"]
    assert (loose["hits"], loose["entries"], loose["hit_rate"]) == (1, 1, 0.5)
    assert stats["proxy"]["mode"] == "pass-through"
    assert stats["embedder"] is None  # the test proxy's embedder does not batch


def test_invalidate_by_filter_and_by_entry(make_proxy, upstream) -> None:
    proxy = make_proxy(**ADMIN)
    ask(proxy)  # a miss: stored
    entry = ask(proxy).headers["x-prism-entry"]
    ask(proxy, "what is a kettle")
    with proxy.http() as http:
        def invalidate(body: object) -> httpx.Response:
            return http.post("/admin/invalidate", headers=as_admin(ADMIN_TOKEN), json=body)
        assert invalidate({}).status_code == 400  # deleting everything must be asked for
        assert invalidate({"colour": "red"}).status_code == 400
        assert invalidate({"entry": "not-hex"}).json()["error"]["param"] == "entry"
        assert invalidate({"entry": entry}).json() == {"deleted": 1}
        assert invalidate({"model": "other"}).json() == {"deleted": 0}
        assert invalidate({"category": "loose", "model": "m1"}).json() == {"deleted": 1}
    assert proxy.entries() == 0
    assert ask(proxy).headers["x-prism-cache"] == "miss"


def test_feedback_removes_the_entry_and_is_counted(make_proxy) -> None:
    proxy = make_proxy(**ADMIN)
    ask(proxy)
    hit = ask(proxy, "how can I reset my password")
    assert hit.headers["x-prism-cache"] == "hit"
    with proxy.http() as http:
        reply = http.post("/admin/feedback", headers=as_admin(ADMIN_TOKEN),
                          json={"entry": hit.headers["x-prism-entry"], "reason": "wrong"})
        assert reply.json()["removed"] is True and reply.json()["category"] == "loose"
        again = http.post("/admin/feedback", headers=as_admin(ADMIN_TOKEN),
                          json={"entry": hit.headers["x-prism-entry"]})
        assert again.status_code == 404
        metrics = http.get("/metrics").text
    assert reply.json()["tenant"].startswith("key-")  # a pass-through tenant: labelled "other"
    assert ('prismcache_false_hit_reports_total{tenant="other",category="loose"} 1'
            in metrics)
    assert ask(proxy, "how can I reset my password").headers["x-prism-cache"] == "miss"


def test_settings_validation() -> None:
    with pytest.raises(ConfigError, match="unknown keys"):
        ServerSettings.from_config({"uptsream": "http://x/v1"})
    with pytest.raises(ConfigError, match="http"):
        ServerSettings.from_config({"upstream": "localhost:8000"})
    with pytest.raises(ConfigError, match="GONE"):
        ServerSettings.from_config({"tenants": [{"tenant": "a", "key_env": "GONE"}]}, environ={})
    with pytest.raises(ConfigError, match="exactly one"):
        ServerSettings.from_config({"tenants": [{"tenant": "a"}]})
    with pytest.raises(ConfigError, match="twice"):
        ServerSettings.from_config({"tenants": [{"tenant": "a", "key": "k"},
                                                {"tenant": "b", "key": "k"}]})
    with pytest.raises(ConfigError, match="true or false"):
        ServerSettings.from_config({"coalesce": "yes"})
    settings = ServerSettings.from_config(
        {"upstream": "http://h:1/v1/", "max_body_bytes": "2MiB", "timeout": "90s",
         "upstream_api_key_env": "K", "tenants": [{"tenant": "acme", "key": "sk-secret"}]},
        environ={"K": "sk-upstream"})
    assert (settings.upstream, settings.max_body_bytes, settings.timeout) == \
        ("http://h:1/v1", 2 * 2**20, 90.0)
    assert settings.upstream_api_key == "sk-upstream" and not settings.pass_through
    assert "sk-" not in repr(settings)


def test_serve_command_registers() -> None:
    import argparse
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--upstream", "http://localhost:8000/v1", "--port", "9"])
    assert (args.upstream, args.port, args.host) == ("http://localhost:8000/v1", 9, "127.0.0.1")
    assert callable(args.func)


def test_invalidate_an_unknown_category_is_a_400(make_proxy) -> None:
    proxy = make_proxy(**ADMIN)
    ask(proxy)
    with proxy.http(api_key=ADMIN_TOKEN) as http:
        raw = http.post("/admin/invalidate", json={"category": "nope"})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "category"
    assert proxy.entries() == 1
