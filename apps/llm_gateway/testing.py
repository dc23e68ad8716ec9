"""Test helpers: a loopback OpenAI-compatible server you drive from a test (no Django needed).

    from apps.llm_gateway.testing import fake_openai

    with fake_openai(latency=0.0) as server:          # a real HTTP server on 127.0.0.1, own thread
        server.base_url                                # "http://127.0.0.1:PORT/v1" → AsyncOpenAI(base_url=...)
        server.script([{"content": "您好"}])            # next chat answer (FIFO queue; model=... to target one)
        server.rule({"content": "七天无理由退货"}, contains="退货")          # when the last message (a user one) has it
        server.rule({"tool_calls": [{"name": "lookup_order", "arguments": {"order_no": "A1"}}]},
                    contains="订单", tools=True)                             # scripted tool call
        server.rule({"content": "订单已发货"}, last_role="tool")            # the turn after the tool result
        server.fail("500", model="m1", times=3)        # also "503", "429" (Retry-After), "timeout", "malformed", "401"
        server.fail("timeout", model="m1", hang=5)     # holds the request 5 s (or until the client gives up)
        server.heal()                                  # drop failure rules
        server.configure(latency=0.2, dim=128)         # latency (s) before every answer; embedding dimension
        server.requests(path="chat", model="m1")       # [{"path", "model", "body", "status", "authorization", "at"}]
        server.stats()                                 # {"chat m1 500": 3, "chat m2 200": 1, ...}
        server.reset()                                 # forget scripts, rules, failures, recorded requests
        server.env("custom", model="fake-model")       # {"CUSTOM_API_BASE": ..., "CUSTOM_API_KEY": ..., ...}

    fake_openai(subprocess=True)   # same API, server in a child process (benchmarks: no GIL sharing)

A reply dict may hold content, tool_calls, usage {"input_tokens", "output_tokens"}, latency,
finish_reason, error. Embeddings are deterministic hashed character n-grams (see
apps.llm_gateway.testserver), so similar Chinese texts get similar vectors; `embed_text(text, dim)` is
exported for tests that want the expected vector. Defaults: chat answers "模拟回复：<last user message>",
usage on every answer, models fake-model / fake-cheap / fake-embedding.

pytest: `fake_openai_server` (function scope) is a fixture; import it into a conftest or a test module
(`from apps.llm_gateway.testing import fake_openai_server  # noqa: F401`).
`use_fake_provider(server, settings)` (with pytest-django's `settings` fixture) points the gateway at
the server (the `custom` provider, routes default/cheap/embedding) — see its docstring.
`reset_gateway()` makes this process reload the gateway's and the costs' configuration (after a test or a
benchmark changed `settings.LLM_*`; writes through the services bump it themselves).
"""

from __future__ import annotations

import os
import subprocess as _subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from apps.llm_gateway.testserver import ServerThread, State, embed_text

__all__ = ["FakeOpenAI", "fake_openai", "embed_text", "fake_openai_server", "reset_gateway", "use_fake_provider"]


class FakeOpenAI:
    """Handle on a running fake server; the methods are State's (see testserver.State)."""

    def __init__(self, base_url: str, state: State | None = None):
        self.base_url = base_url
        self.api_key = "sk-fake-0000"
        self._state = state
        self._http = None if state is not None else httpx.Client(base_url=base_url.removesuffix("/v1"), timeout=30)

    def _call(self, op: str, **kwargs):
        if self._state is not None:
            return getattr(self._state, op)(**kwargs)
        response = self._http.post(f"/_control/{op}", json=kwargs)
        response.raise_for_status()
        return response.json()["result"]

    def script(self, replies: list[dict], model: str | None = None) -> int:
        return self._call("script", replies=replies, model=model)

    def rule(
        self,
        reply: dict,
        contains: str | None = None,
        model: str | None = None,
        tools: bool | None = None,
        last_role: str | None = None,
        times: int | None = None,
        first: bool = False,
    ) -> int:
        return self._call(
            "rule",
            reply=reply,
            contains=contains,
            model=model,
            tools=tools,
            last_role=last_role,
            times=times,
            first=first,
        )

    def fail(
        self,
        mode: str = "500",
        model: str | None = None,
        times: int | None = None,
        retry_after: float = 0.05,
        hang: float = 60.0,
        path: str = "chat",
    ) -> int:
        return self._call("fail", mode=mode, model=model, times=times, retry_after=retry_after, hang=hang, path=path)

    def heal(self, model: str | None = None) -> None:
        return self._call("heal", model=model)

    def configure(self, **kwargs) -> dict:
        return self._call("configure", **kwargs)

    def reset(self) -> None:
        return self._call("reset")

    def requests(self, path: str | None = None, model: str | None = None) -> list[dict]:
        return self._call("requests", path=path, model=model)

    def stats(self) -> dict:
        return self._call("stats")

    def env(self, name: str = "custom", model: str = "fake-model", timeout: float | None = None) -> dict[str, str]:
        """Environment variables that configure provider `name` against this server."""
        prefix = name.upper()
        values = {f"{prefix}_API_BASE": self.base_url, f"{prefix}_API_KEY": self.api_key, f"{prefix}_MODEL": model}
        if timeout is not None:
            values[f"{prefix}_TIMEOUT"] = str(timeout)
        return values

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


@contextmanager
def fake_openai(
    latency: float = 0.0,
    script: list[dict] | None = None,
    rules: list[dict] | None = None,
    dim: int = 256,
    subprocess: bool = False,
    record: bool = True,
    api_key: str | None = None,
) -> Iterator[FakeOpenAI]:
    """Run the loopback server for the duration of the block. `rules`: kwargs dicts for `rule()`."""
    if subprocess:
        argv = [
            sys.executable,
            "-m",
            "apps.llm_gateway.testserver",
            "--port",
            "0",
            "--latency",
            str(latency),
            "--dim",
            str(dim),
        ]
        if not record:
            argv.append("--no-record")
        if api_key:
            argv += ["--api-key", api_key]
        root = Path(__file__).resolve().parents[2]
        proc = _subprocess.Popen(
            argv, cwd=root, stdout=_subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)}
        )
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            proc.kill()
            raise RuntimeError(f"fake OpenAI server did not start: {line!r}")
        server = FakeOpenAI(line.removeprefix("listening on "))
        runner = None
    else:
        state = State(latency=latency, dim=dim, record=record, api_key=api_key)
        runner = ServerThread(state).start()
        server = FakeOpenAI(runner.base_url, state)
        proc = None
    if api_key:
        server.api_key = api_key
    try:
        if script:
            server.script(script)
        for rule in rules or []:
            server.rule(**rule)
        yield server
    finally:
        server.close()
        if runner is not None:
            runner.stop()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except _subprocess.TimeoutExpired:
                proc.kill()
            proc.stdout.close()


def use_fake_provider(
    server: FakeOpenAI,
    settings,
    model: str = "fake-model",
    cheap_model: str = "fake-cheap",
    embedding_model: str = "fake-embedding",
    timeout: float = 5.0,
    name: str = "custom",
) -> None:
    """Point the gateway at `server` through settings (pytest-django's `settings` fixture, restored after the
    test): provider `name` with routes default → model, cheap → cheap_model, embedding → embedding_model."""
    settings.LLM_PROVIDERS = {
        name: {"api_base": server.base_url, "api_key": server.api_key, "model": model, "timeout": timeout},
    }
    settings.LLM_ROUTES = {
        "default": [{"provider": name, "model": model}],
        "cheap": [{"provider": name, "model": cheap_model}],
        "embedding": [{"provider": name, "model": embedding_model}],
    }
    reset_gateway()


def reset_gateway() -> None:
    """Reload the gateway's providers / routes and the costs' prices / budgets in this process on their next
    read (settings.LLM_* changed: settings are not data, nothing bumps them)."""
    from apps.costs.config import CONFIG as COSTS
    from apps.llm_gateway import services
    from apps.llm_gateway.config import CONFIG as GATEWAY

    GATEWAY.forget()
    COSTS.forget()
    # A test's event loop ends with the test; its provider clients hold it, so their weak key never dies.
    services._clients.clear()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is a dev dependency
    pytest = None

if pytest is not None:

    @pytest.fixture
    def fake_openai_server() -> Iterator[FakeOpenAI]:
        with fake_openai() as server:
            yield server
