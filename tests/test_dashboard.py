"""The operator's dashboard: its admin JSON over plain HTTP, its timeline, the Grafana board,
and the page itself in a real headless Chromium (skipped, with the reason, where Chromium or
chromedriver is not installed: ``apt-get install chromium chromium-driver``).

Run as a script to retake the README's screenshot under traffic::

    .venv/bin/python tests/test_dashboard.py --screenshot docs/img/dashboard.png
"""

from __future__ import annotations

import argparse
import doctest
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prismcache.server import timeline as timeline_module
from prismcache.server.auth import hash_key
from prismcache.server.timeline import Reading, Timeline, histogram_quantile
from proxy_support import ADMIN_TOKEN, Proxy, make_proxy, upstream, user  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"server": {"admin_token_env": "PRISM_ADMIN"}, "environ": {"PRISM_ADMIN": ADMIN_TOKEN}}
TENANT = hash_key("sk-client-a")  # the pass-through tenant of the proxy's default client key
ASKED = "How do I reset my password?"
PARAPHRASE = "how can I reset my password"
ELSEWHERE = "Which trains run from Lyon to Geneva on Sunday evening?"
NEVER_ASKED = "What is the boiling point of tin in kelvin?"
ADAPTIVE = {"adaptive": {"inflight_high": 4, "defaults": {"max_threshold_drop": 0.05,
                                                          "max_ttl_factor": 2}}}


def as_admin(token: str | None = ADMIN_TOKEN) -> dict[str, str]:
    return {} if token is None else {"authorization": f"Bearer {token}"}


def ask(proxy: Proxy, text: str = ASKED, **headers: str) -> httpx.Response:
    with proxy.http() as http:
        reply = http.post("/v1/chat/completions", headers=headers,
                          json={"model": "m1", "messages": user(text)})
    assert reply.status_code == 200, reply.text
    proxy.settle()  # stored before the next (maybe paraphrased) question is asked
    return reply


def admin_get(proxy: Proxy, path: str) -> Any:
    with proxy.http(api_key=None) as http:
        reply = http.get(path, headers=as_admin())
    assert reply.status_code == 200, reply.text
    return reply.json()


def explain(proxy: Proxy, query: str, **extra: Any) -> httpx.Response:
    with proxy.http(api_key=None) as http:
        return http.post("/admin/explain", headers=as_admin(),
                         json={"query": query, "tenant": TENANT, "model": "m1", **extra})


# -- plain HTTP -------------------------------------------------------------------------------

@pytest.mark.parametrize("path,method", [("/admin/dashboard", "GET"),
                                         ("/admin/timeline", "GET"),
                                         ("/admin/explain", "POST")])
def test_dashboard_endpoints_refuse_without_the_admin_token(make_proxy, path, method) -> None:
    proxy = make_proxy(**ADMIN)
    ask(proxy)
    with proxy.http(api_key=None) as http:
        for token in (None, "wrong-token", "sk-client-a"):
            raw = http.request(method, path, headers=as_admin(token),
                               json={"query": ASKED, "tenant": TENANT, "model": "m1"})
            assert raw.status_code == 401, token
            assert raw.json()["error"]["code"] == "invalid_admin_token"
            assert ASKED not in raw.text and TENANT not in raw.text
        ok = http.request(method, path, headers=as_admin(),
                          json={"query": ASKED, "tenant": TENANT, "model": "m1"})
    assert ok.status_code == 200, ok.text


def test_no_dashboard_without_an_admin_token(make_proxy) -> None:
    proxy = make_proxy(server={"admin_token_env": "UNSET_VARIABLE"})
    with proxy.http(api_key=None) as http:
        assert http.get("/dashboard").status_code == 404
        assert http.get("/admin/dashboard", headers=as_admin("x")).status_code == 404


def test_the_page_and_its_assets_are_self_contained(make_proxy) -> None:
    proxy = make_proxy(**ADMIN)
    with proxy.http(api_key=None) as http:
        page = http.get("/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert page.headers["cache-control"] == "no-store"
        assets = re.findall(r'(?:href|src)="(/dashboard/static/[^"]+)"', page.text)
        assert len(assets) == 3
        for path in assets:
            reply = http.get(path)
            assert reply.status_code == 200 and reply.content, path
            # nothing from another origin: no CDN, no fonts, works offline
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", reply.text), path
        assert http.get("/dashboard/static/../app.py").status_code == 404
        assert http.get("/dashboard/static/secrets.txt").status_code == 404
    assert not re.search(r"https?://", page.text)


def test_dashboard_json_matches_admin_stats(make_proxy) -> None:
    proxy = make_proxy(**ADMIN)
    ask(proxy)
    ask(proxy)  # exact hit
    ask(proxy, PARAPHRASE)  # semantic hit
    ask(proxy, ELSEWHERE, **{"x-prism-category": "strict"})
    stats = admin_get(proxy, "/admin/stats")["categories"]
    snap = admin_get(proxy, "/admin/dashboard")
    rows = {c["category"]: c for c in snap["categories"]}
    assert set(rows) == set(stats) >= {"loose", "strict"}
    for name, counted in stats.items():
        assert rows[name]["stats"] == counted
    loose = rows["loose"]
    assert (loose["stats"]["hits"], loose["stats"]["exact_hits"]) == (2, 1)
    assert loose["requests"] == {"hit": 2, "miss": 1, "bypass": 0}
    assert loose["policy"]["threshold"] == loose["in_force"]["threshold"] == 0.5
    assert loose["in_force"]["ttl"] == "1h"
    assert loose["quota"]["entries"] == 500 and loose["quota"]["use"] == pytest.approx(1 / 500)
    assert loose["usd_saved"] > 0 and loose["economics"]["requests"] == 3
    # pass-through keys are hashed tenants, never metric labels: they count under "other"
    assert snap["tenants"] == ["other"]


def test_load_adaptive_adjustment_is_visible(make_proxy, upstream) -> None:
    proxy = make_proxy({**ADAPTIVE, "adaptive": {**ADAPTIVE["adaptive"], "rise_per_second": 5.0,
                                                 "inflight_high": 1}}, **ADMIN)
    upstream.behaviour.latency = 0.3
    with httpx.Client(base_url=proxy.root, timeout=10.0) as http:
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(http.post, "/v1/chat/completions",
                                   json={"model": "m1", "messages": user(f"question {i}")})
                       for i in range(4)]
            time.sleep(0.15)
            snap = admin_get(proxy, "/admin/dashboard")
            for f in futures:
                f.result()
    assert snap["adaptive"] and snap["load"]["m1"] > 0 and snap["models"] == ["m1"]
    loose = {c["category"]: c for c in snap["categories"]}["loose"]
    assert loose["in_force"]["threshold"] < loose["policy"]["threshold"] == 0.5
    assert loose["in_force"]["ttl_s"] > loose["policy"]["ttl_s"]


def test_a_category_the_economics_disable_shows_as_disabled(make_proxy) -> None:
    proxy = make_proxy({"economics": {"window": "1s", "min_requests": 3,
                                      "categories": {"strict": {"auto_disable": True}}}},
                       **ADMIN)
    strict = {"x-prism-category": "strict"}
    for i in range(4):  # all different: strict never hits, so it cannot pay
        ask(proxy, f"{NEVER_ASKED} ({i})", **strict)
    time.sleep(1.1)
    for i in range(4, 8):
        ask(proxy, f"{NEVER_ASKED} ({i})", **strict)
    rows = {c["category"]: c for c in admin_get(proxy, "/admin/dashboard")["categories"]}
    assert rows["strict"]["economics"]["disabled"] is True
    assert rows["strict"]["policy"]["enabled"] is True
    assert rows["strict"]["in_force"]["enabled"] is False
    assert rows["loose"]["in_force"]["enabled"] is True


def test_explain_a_hit_and_a_miss_in_the_tenants_partition(make_proxy) -> None:
    proxy = make_proxy(**ADMIN)
    ask(proxy)  # a miss, stored
    entry = ask(proxy).headers["x-prism-entry"]  # an exact hit
    before = admin_get(proxy, "/admin/stats")["categories"]
    exact = explain(proxy, ASKED).json()
    assert (exact["decision"], exact["tier"], exact["entry"]) == ("hit", "exact", entry)
    hit = explain(proxy, PARAPHRASE).json()
    assert hit["decision"] == "hit" and hit["tier"] == "semantic" and hit["entry"] == entry
    assert hit["category"] == "loose" and hit["threshold"] == 0.5
    assert hit["candidates"][0]["entry"] == entry
    assert hit["candidates"][0]["query"] == ASKED and hit["candidates"][0]["outcome"] == "served"
    assert hit["candidates"][0]["similarity"] == pytest.approx(hit["similarity"])
    miss = explain(proxy, NEVER_ASKED, category="strict").json()
    assert miss["decision"] == "miss" and miss["reason"] == "empty"
    assert miss["category"] == "strict"
    near = explain(proxy, NEVER_ASKED).json()  # loose holds an entry, far from this query
    assert near["decision"] == "miss" and near["reason"] == "below-threshold"
    assert near["candidates"][0]["outcome"] == "below-threshold"
    # another tenant's partition is another cache: nothing to see there
    other = explain(proxy, ASKED, tenant="someone-else").json()
    assert other["decision"] == "miss" and other["candidates"] == []
    with proxy.http(api_key=None) as http:
        for bad in ({"query": ""}, {"query": 3}, {"query": "x", "category": "nope"}):
            raw = http.post("/admin/explain", headers=as_admin(), json={"model": "m1", **bad})
            assert raw.status_code == 400, bad
    assert admin_get(proxy, "/admin/stats")["categories"] == before  # explaining counts nothing


def test_timeline_samples_differences_and_restarts() -> None:
    t = Timeline(capacity=2)
    bounds = (0.001, 0.01)
    t.record(Reading(now=0.0, categories={"a": (10, 5, 1)}, overhead=(1, 2, 2), bounds=bounds))
    t.record(Reading(now=5.0, categories={"a": (20, 8, 2), "b": (3, 3, 3)},
                     overhead=(1, 12, 12), bounds=bounds, levels={"m": 0.5}))
    t.record(Reading(now=10.0, categories={"a": (4, 1, 0)}, overhead=(1, 12, 12),
                     bounds=bounds))
    first, second = t.since(0)
    assert (first.categories["a"].lookups, first.categories["a"].hits) == (10, 3)
    assert first.categories["b"].hit_rate == 1.0 and first.levels == {"m": 0.5}
    assert first.misses == 10 and 0.001 < first.overhead_p50 <= first.overhead_p99 <= 0.01
    assert second.categories["a"].lookups == 4  # the counters restarted: counted from zero
    assert second.misses == 0 and second.overhead_p50 is None
    assert [s.t for s in t.since(5.0)] == [10.0]
    t.record(Reading(now=15.0))
    assert len(t) == 2  # the oldest sample made room
    assert histogram_quantile(0.5, (), ()) is None
    assert doctest.testmod(timeline_module).failed == 0


def test_timeline_endpoint_serves_the_sampled_hour(make_proxy) -> None:
    proxy = make_proxy(**ADMIN)
    ask(proxy)
    sampler = proxy.server.server.config.app.state.prism_sampler
    deadline = time.monotonic() + 15
    while not len(sampler.timeline) and time.monotonic() < deadline:
        time.sleep(0.2)
    body = admin_get(proxy, "/admin/timeline?since=0")
    assert body["interval_s"] == sampler.interval and body["samples"]
    latest = body["samples"][-1]["t"]
    assert admin_get(proxy, f"/admin/timeline?since={latest}")["samples"] == []
    with proxy.http(api_key=None) as http:
        assert http.get("/admin/timeline?since=soon", headers=as_admin()).status_code == 400


def test_grafana_dashboard_uses_the_real_metric_names(make_proxy) -> None:
    proxy = make_proxy(ADAPTIVE, **ADMIN)
    ask(proxy)
    ask(proxy)
    with proxy.http() as http:
        exposed = http.get("/metrics").text
    declared = set(re.findall(r"^# TYPE (\w+) ", exposed, flags=re.M))
    board = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert exprs
    used = {re.sub(r"_(bucket|sum|count)$", "", name)
            for e in exprs for name in re.findall(r"\bprismcache_\w+", e)}
    assert used and used <= declared, used - declared


# -- the page in a real browser -----------------------------------------------------------------

def chromium_driver(width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium under chromedriver, with a fresh profile; ``pytest.skip`` (with the
    reason) when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip("headless browser tests need Debian's chromium and chromium-driver "
                    f"(chromium: {browser}, chromedriver: {driver_path})")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    profile = tempfile.mkdtemp(prefix="prism-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver_path)
    from selenium.common.exceptions import WebDriverException
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:  # installed but cannot start here (no display libs, ...)
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"headless Chromium did not start: {exc.msg}")
    driver.set_page_load_timeout(20)
    driver.prism_profile = profile
    return driver


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = chromium_driver()
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(driver.prism_profile, ignore_errors=True)


def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy (bounded), and return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - the page may be mid-update; retry
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}: last saw {last!r}")


def sign_in(driver: Any, proxy: Proxy) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    driver.get(proxy.root + "/dashboard")
    token = driver.find_element(By.ID, "token")
    assert driver.switch_to.active_element == token  # keyboard users start typing at once
    token.send_keys(ADMIN_TOKEN + Keys.ENTER)
    wait_for(lambda: driver.find_element(By.ID, "app").is_displayed(), what="the signed-in page")
    assert "token" not in driver.current_url and ADMIN_TOKEN not in driver.current_url
    stored = driver.execute_script("return sessionStorage.getItem('prismcache.admin-token')")
    assert stored == ADMIN_TOKEN


def page_counters(driver: Any) -> dict[str, dict[str, float]]:
    """The category table as ``{category: {field: raw value}}``."""
    return driver.execute_script("""
        const out = {};
        for (const tr of document.querySelectorAll('#categories tbody tr[data-category]')) {
          const row = out[tr.dataset.category] = {};
          for (const td of tr.querySelectorAll('td[data-field]'))
            if (td.dataset.value !== undefined) row[td.dataset.field] = Number(td.dataset.value);
        }
        return out;""")


def matches_stats(driver: Any, proxy: Proxy) -> bool:
    stats = admin_get(proxy, "/admin/stats")["categories"]
    shown = page_counters(driver)
    return set(shown) == set(stats) and all(
        shown[c]["lookups"] == s["lookups"] and shown[c]["exact_hits"] == s["exact_hits"]
        and shown[c]["semantic_hits"] == s["hits"] - s["exact_hits"]
        and shown[c]["entries"] == s["entries"]
        and shown[c]["bytes"] == s["bytes"] and shown[c]["evictions"] == s["evictions"]
        and shown[c]["hit_rate"] == pytest.approx(s["hit_rate"])
        for c, s in stats.items())


def explain_on_page(driver: Any, query: str, category: str = "") -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    for field, value in (("ex-query", query), ("ex-tenant", TENANT), ("ex-model", "m1")):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    Select(driver.find_element(By.ID, "ex-category")).select_by_value(category)
    driver.execute_script("document.getElementById('ex-decision').dataset.decision = ''")
    driver.find_element(By.CSS_SELECTOR, "#explain-form button[type=submit]").click()
    return wait_for(lambda: driver.find_element(By.ID, "ex-decision")
                    if driver.find_element(By.ID, "ex-decision").get_attribute("data-decision")
                    else None, what=f"the explanation of {query!r}")


def severe_console_entries(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_dashboard_in_a_browser(make_proxy, browser) -> None:
    from selenium.webdriver.common.by import By
    proxy = make_proxy(**ADMIN)
    sign_in(browser, proxy)
    entry = ask(proxy).headers.get("x-prism-entry")  # a miss, stored
    assert entry is None
    entry = ask(proxy).headers["x-prism-entry"]  # exact hit
    ask(proxy, PARAPHRASE)  # semantic hit
    ask(proxy, ELSEWHERE, **{"x-prism-category": "strict"})
    wait_for(lambda: matches_stats(browser, proxy), what="the page to match /admin/stats")
    tiles = browser.find_element(By.ID, "t-hit-rate").text
    assert tiles == "50.0 %", tiles  # 2 hits of 4 lookups, with its unit
    loose = browser.find_element(By.CSS_SELECTOR, '#categories tr[data-category="loose"]')
    assert "1 h" in loose.find_element(By.CSS_SELECTOR, 'td[data-field="ttl"]').text
    assert loose.find_element(By.CSS_SELECTOR, 'td[data-field="bytes"]').text.endswith("B")

    decision = explain_on_page(browser, PARAPHRASE)
    assert decision.get_attribute("data-decision") == "hit", decision.text
    assert entry in decision.text and "semantic" in decision.text
    first = browser.find_element(By.CSS_SELECTOR, "#candidates tbody tr")
    assert first.get_attribute("data-entry") == entry and ASKED in first.text
    decision = explain_on_page(browser, NEVER_ASKED, "strict")
    assert decision.get_attribute("data-decision") == "miss", decision.text
    assert decision.get_attribute("data-reason"), decision.text

    # invalidate the hit's entry from the search results: the cache forgets it
    explain_on_page(browser, PARAPHRASE)
    row = browser.find_element(By.CSS_SELECTOR, f'#candidates tr[data-entry="{entry}"]')
    row.find_element(By.CSS_SELECTOR, "button[data-action=invalidate]").click()
    wait_for(lambda: "Invalidated entry" in browser.find_element(By.ID, "action-result").text,
             what="the invalidation's answer")
    assert ask(proxy).headers["x-prism-cache"] == "miss"
    # invalidate a whole category from the form (a second press confirms)
    browser.find_element(By.ID, "inv-value").send_keys("loose")
    browser.find_element(By.ID, "inv-submit").click()
    assert "confirm" in browser.find_element(By.ID, "action-result").text
    browser.find_element(By.ID, "inv-submit").click()
    wait_for(lambda: "Invalidated" in browser.find_element(By.ID, "action-result").text,
             what="the category invalidation")
    assert admin_get(proxy, "/admin/stats")["categories"]["loose"]["entries"] == 0
    wait_for(lambda: page_counters(browser)["loose"]["entries"] == 0, what="entries to reach 0")
    wait_for(lambda: matches_stats(browser, proxy), what="the page to match /admin/stats")

    # a phone's width: nothing overflows the viewport sideways (tables scroll in their boxes)
    browser.set_window_size(375, 812)
    wait_for(lambda: browser.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth"),
        what="the page to fit 375 px")
    assert severe_console_entries(browser) == []


def test_keyboard_reaches_every_control_and_signing_out_forgets_the_token(make_proxy,
                                                                         browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    proxy = make_proxy(**ADMIN)
    sign_in(browser, proxy)
    visited = set()
    for _ in range(80):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        visited.add(browser.switch_to.active_element.get_attribute("id"))
    controls = {"logout", "show-idle", "ex-query", "ex-tenant", "ex-model", "ex-category",
                "inv-kind", "inv-value", "inv-submit", "fb-entry", "fb-reason"}
    assert controls <= visited, controls - visited
    browser.find_element(By.ID, "logout").click()
    assert browser.find_element(By.ID, "login").is_displayed()
    assert browser.execute_script(
        "return sessionStorage.getItem('prismcache.admin-token')") is None
    assert severe_console_entries(browser) == []


# -- the README's screenshot ------------------------------------------------------------------

def take_screenshot(path: Path, seconds: float = 90.0) -> None:
    """Run a proxy under mixed traffic for ``seconds`` and save the dashboard at 1280 x 900."""
    import threading

    from conftest import CountingEmbedder
    from fake_upstream import ServerThread, serving_upstream
    from prismcache import SemanticCache
    from prismcache.server import ServerSettings, create_app
    # the shipped categories and the bundled MiniLM embedder; "creative" pays too little and
    # is switched off by the economics after a minute, to show that state too
    # the upstream slows down and recovers every 20 s, so the load level moves
    config = {"store": "memory://", "capacity": {"entries": 2000},
              "adaptive": {**ADAPTIVE["adaptive"], "latency_high": "300ms", "window": "10s"},
              "economics": {"window": "1m", "min_requests": 30,
                            "categories": {"creative": {"auto_disable": True}}}}
    questions = {
        "support": ["How do I reset my password?", "how can I reset my password",
                    "I forgot my password, how do I reset it?", "Where can I find my invoice?",
                    "where is my invoice", "How do I cancel my subscription?"],
        "code": ["Write a Python function to reverse a list",
                 "python function that reverses a list", "What is a closure in JavaScript?",
                 "explain closures in javascript"],
        "factual": ["What is the capital of Australia?", "capital city of australia",
                    "Who wrote Hamlet?", "who is the author of hamlet"],
        "creative": ["Write a short poem about {n} cats on a roof"],
        "conversation": ["hi, how are you today? ({n})"]}
    with serving_upstream() as fake:
        fake.behaviour.latency = 0.15
        cache = SemanticCache.open(config)
        settings = ServerSettings.from_config({"upstream": fake.url, "admin_token_env": "A"},
                                              environ={"A": ADMIN_TOKEN})
        server = ServerThread(create_app(cache, settings)).start()
        proxy = Proxy(server=server, cache=cache, settings=settings,
                      embedder=CountingEmbedder())  # (unused: the cache has its own)
        stop = threading.Event()

        def traffic(worker: int) -> None:
            n = worker * 1_000_000  # creative requests are all different: that category misses
            with httpx.Client(base_url=server.url, timeout=10.0,
                              headers={"authorization": "Bearer sk-client-a"}) as http:
                while not stop.is_set():
                    n += 1
                    for category, texts in questions.items():
                        text = texts[n % len(texts)].format(n=n)
                        http.post("/v1/chat/completions", headers={"x-prism-category": category},
                                  json={"model": "m1" if n % 3 else "m2",
                                        "messages": user(text)})
                    stop.wait(0.2 + 0.1 * worker)

        def weather() -> None:
            while not stop.wait(20.0):
                fake.behaviour.latency = 0.5 if fake.behaviour.latency < 0.3 else 0.15

        workers = [threading.Thread(target=traffic, args=(i,)) for i in range(6)]
        workers.append(threading.Thread(target=weather))
        for w in workers:
            w.start()
        driver = chromium_driver(1280, 900)
        try:
            time.sleep(seconds)
            sign_in(driver, proxy)
            hit = ask(proxy, "I forgot my password, how do I reset it?",
                      **{"x-prism-category": "support"})
            if "x-prism-entry" in hit.headers:
                with httpx.Client(base_url=server.url, timeout=10.0) as http:
                    http.post("/admin/feedback", headers=as_admin(),
                              json={"entry": hit.headers["x-prism-entry"], "reason": "demo"})
            explain_on_page(driver, "how do I reset my pasword", "support")
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
            driver.execute_script("window.scrollTo(0, 0)")
            time.sleep(4)
            driver.save_screenshot(str(path))
            problems = severe_console_entries(driver)
        finally:
            stop.set()
            for w in workers:
                w.join()
            driver.quit()
            shutil.rmtree(driver.prism_profile, ignore_errors=True)
            server.stop()
            cache.close()
    if problems:
        raise SystemExit(f"console errors: {problems}")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Retake the dashboard screenshot.")
    parser.add_argument("--screenshot", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=90.0)
    args = parser.parse_args()
    take_screenshot(args.screenshot, args.seconds)


if __name__ == "__main__":
    main()
