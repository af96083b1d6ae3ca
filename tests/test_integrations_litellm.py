"""LiteLLM's OpenAI-compatible provider pointed at a real ``prismcache serve`` process, which
forwards misses to the fake upstream (a real HTTP server).

LiteLLM runs in a child process that the test drives one call at a time over its stdin and
stdout: importing it takes seconds, and it keeps an event loop of its own that would leak
into the test process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_upstream import FakeUpstream, serving_upstream
from integration_support import PARAPHRASE, PASSWORD
from proxy_support import PROXY_CONFIG
from redis_support import free_port
from test_cluster import ProxyProcess

if importlib.util.find_spec("litellm") is None:
    pytest.skip("litellm is not installed (pip install litellm, or prismcache[test])",
                allow_module_level=True)

# One LiteLLM call per line of stdin ({"kwargs": ...}); one JSON answer per line of stdout.
DRIVER = """
import json, sys
answers, sys.stdout = sys.stdout, sys.stderr  # LiteLLM prints hints of its own to stdout
import litellm
litellm.suppress_debug_info = True
print(json.dumps({"ready": True}), file=answers, flush=True)
for line in sys.stdin:
    kwargs = json.loads(line)
    try:
        reply = litellm.completion(**kwargs)
        if kwargs.get("stream"):
            chunks = list(reply)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            out = {"text": text, "chunks": len(chunks)}
        else:
            out = {"text": reply.choices[0].message.content, "type": type(reply).__name__}
    except Exception as exc:
        out = {"error": type(exc).__name__, "status": getattr(exc, "status_code", None)}
    print(json.dumps(out), file=answers, flush=True)
"""


class LiteLLM:
    """The child process running LiteLLM."""

    def __init__(self, base_url: str, log: Path) -> None:
        self.base_url = base_url
        # offline: LiteLLM's bundled model-cost map, not a download at import
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "LITELLM_TELEMETRY": "False"}
        with open(log, "ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=err, text=True, env=env, start_new_session=True)
        assert self._read(timeout=120.0) == {"ready": True}, log.read_text()[-2000:]

    def completion(self, text: str, *, model: str = "m1", api_key: str = "sk-client-a",
                   **kwargs: Any) -> dict[str, Any]:
        """One ``litellm.completion`` through the proxy, as the child saw it."""
        assert self.process.stdin is not None
        call = {"model": f"openai/{model}", "api_base": self.base_url, "api_key": api_key,
                "messages": [{"role": "user", "content": text}], "max_retries": 0,
                "timeout": 20, **kwargs}
        self.process.stdin.write(json.dumps(call) + "\n")
        self.process.stdin.flush()
        return self._read(timeout=60.0)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            pytest.fail(f"LiteLLM did not answer within {timeout} s")
        line = self.process.stdout.readline()
        if not line:
            pytest.fail(f"LiteLLM exited ({self.process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with serving_upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def litellm(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[LiteLLM]:
    """``prismcache serve`` over the fake upstream, and LiteLLM pointed at it."""
    tmp = tmp_path_factory.mktemp("litellm")
    config = tmp / "prism.yaml"
    config.write_text(yaml.safe_dump(PROXY_CONFIG))
    proxy = ProxyProcess("litellm", free_port(),
                         ["serve", "--config", str(config),
                          "--upstream", upstream.url],  # type: ignore[attr-defined]
                         tmp / "proxy.log")
    client = None
    try:
        proxy.start().wait_ready()
        client = LiteLLM(f"http://127.0.0.1:{proxy.port}/v1", tmp / "litellm.log")
        yield client
    finally:
        if client is not None:
            client.close()
        proxy.kill()
        proxy.http.close()


def test_a_paraphrase_is_served_from_the_cache(litellm: LiteLLM,
                                               upstream: FakeUpstream) -> None:
    upstream.reset()
    first = litellm.completion(PASSWORD)
    assert first["type"] == "ModelResponse" and first["text"].endswith(PASSWORD)
    assert litellm.completion(PARAPHRASE)["text"] == first["text"]
    assert upstream.generations == 1


def test_another_tenant_or_model_is_not_served(litellm: LiteLLM,
                                               upstream: FakeUpstream) -> None:
    upstream.reset()
    first = litellm.completion("what is the refund policy")
    assert litellm.completion("what is the refund policy", api_key="sk-client-b") != first
    assert litellm.completion("what is the refund policy", model="m2") != first
    assert upstream.generations == 3


def test_a_streamed_call_round_trips(litellm: LiteLLM, upstream: FakeUpstream) -> None:
    upstream.reset()
    first = litellm.completion("tell me a story about cats", stream=True)
    again = litellm.completion("Tell me a short story about cats", stream=True)
    assert again["text"] == first["text"] and first["text"].endswith("about cats")
    assert again["chunks"] > 2  # replayed as a stream, not one lump
    assert upstream.generations == 1


def test_a_failing_upstream_leaves_nothing_stored(litellm: LiteLLM,
                                                  upstream: FakeUpstream) -> None:
    upstream.reset()
    upstream.behaviour.status = 500
    failed = litellm.completion("is the service down")
    assert "error" in failed and failed["status"] == 500
    upstream.behaviour.status = 200
    assert "text" in litellm.completion("is the service down")
    assert upstream.generations == 2  # the failure was not served from the cache
