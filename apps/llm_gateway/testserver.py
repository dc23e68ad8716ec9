"""A loopback OpenAI-compatible server for tests, benchmarks and demos (no Django, no network).

Run it alone:  ``python -m apps.llm_gateway.testserver --port 8900 [--latency 0.2] [--dim 256]``
(prints ``listening on http://127.0.0.1:8900/v1`` once ready). In tests use
``apps.llm_gateway.testing.fake_openai(...)`` (a context manager; the server runs in a background
thread, or in a subprocess with ``subprocess=True`` for benchmarks) — see that module's docstring for
the full scripting API. aiohttp underneath: thousands of concurrent connections are fine.

Endpoints (OpenAI wire format, any ``Authorization: Bearer …`` accepted unless ``api_key`` is set):

- ``POST /v1/chat/completions`` — answers from, in this order: failure rules (``fail``), the
  scripted queue (``script``), content rules (``rule``), then a deterministic default
  (``"模拟回复：" + last user message``). Every answer carries ``usage`` (input tokens = characters of
  the prompt + 4 per message, output tokens = characters of the answer, unless a reply sets them).
  ``stream: true`` is answered as server-sent events (with a usage chunk when
  ``stream_options.include_usage``).
- ``POST /v1/embeddings`` — deterministic vectors: hashed character 1/2/3-grams, signed, L2-normalised,
  ``dim`` dimensions (default 256, or ``dimensions`` in the request), so texts sharing characters and
  phrases (Chinese included) have a higher cosine. ``encoding_format`` float or base64 (the ``openai``
  client asks for base64 by default).
- ``GET /v1/models`` — the configured model list.
- ``POST /_control/<op>`` — JSON kwargs → the :class:`State` method of that name (used by the
  subprocess handle; ops: script, rule, fail, configure, reset, requests, stats).

A *reply* is a dict, every key optional::

    {"content": "text", "tool_calls": [{"name": "lookup_order", "arguments": {"id": 1}}],
     "usage": {"input_tokens": 10, "output_tokens": 5}, "latency": 0.5, "finish_reason": "stop",
     "error": "500" | "429" | "timeout" | "malformed" | "401", "retry_after": 1.0, "hang": 30}

A *rule* matches when all given conditions hold: ``contains`` (substring of the last message, which must
be a user message — so a tool-calling rule does not fire again on the turn that carries the tool result),
``model`` (exact model name), ``tools`` (True/False: the request has tools), ``last_role`` (role of the
last message, e.g. ``"tool"`` for the turn after a tool result); ``times`` limits how often it fires.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import struct
import threading
import time
import uuid
from typing import Any

from aiohttp import web

DEFAULT_MODELS = ("fake-model", "fake-cheap", "fake-embedding")
FAILURE_MODES = ("500", "429", "timeout", "malformed", "401", "503")


def text_of(content: Any) -> str:
    """The text of an OpenAI message content (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def embed_text(text: str, dim: int = 256) -> list[float]:
    """Hashed character n-gram embedding: deterministic, similar texts → similar vectors."""
    vec = [0.0] * dim
    chars = "".join(text.lower().split())
    if not chars:
        vec[0] = 1.0
        return vec
    for n, weight in ((1, 0.5), (2, 1.0), (3, 1.0)):
        for i in range(len(chars) - n + 1):
            digest = hashlib.blake2b(chars[i : i + n].encode(), digest_size=8).digest()
            h = int.from_bytes(digest, "little")
            vec[h % dim] += weight if (h >> 63) & 1 else -weight
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def _matches(rule: dict, model: str, body: dict) -> bool:
    messages = body.get("messages") or []
    if rule.get("model") is not None and rule["model"] != model:
        return False
    if rule.get("contains") is not None:
        last = messages[-1] if messages else {}
        if last.get("role") != "user" or rule["contains"] not in text_of(last.get("content")):
            return False
    if rule.get("tools") is not None and bool(body.get("tools")) != bool(rule["tools"]):
        return False
    if rule.get("last_role") is not None and (not messages or messages[-1].get("role") != rule["last_role"]):
        return False
    return True


class State:
    """Everything a test can script or inspect. Thread-safe (the server runs on another thread)."""

    def __init__(
        self,
        latency: float = 0.0,
        dim: int = 256,
        models: tuple[str, ...] = DEFAULT_MODELS,
        api_key: str | None = None,
        record: bool = True,
    ):
        self._lock = threading.Lock()
        self.latency = latency
        self.dim = dim
        self.models = list(models)
        self.api_key = api_key
        self.record = record
        self._queue: list[dict] = []
        self._rules: list[dict] = []
        self._failures: list[dict] = []
        self._requests: list[dict] = []
        self._counts: dict[str, int] = {}
        self.shutdown = asyncio.Event()  # set by the server on stop: hung handlers return

    # --- scripting -------------------------------------------------------------------------------
    def script(self, replies: list[dict] | None = None, model: str | None = None) -> int:
        """Queue canned replies, answered FIFO (only to requests for `model`, when given)."""
        with self._lock:
            for reply in replies or []:
                self._queue.append({"model": model, "times": 1, "reply": dict(reply)})
            return len(self._queue)

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
        """Answer `reply` to requests matching every given condition (`times`: at most that often)."""
        entry = {
            "contains": contains,
            "model": model,
            "tools": tools,
            "last_role": last_role,
            "times": times,
            "reply": dict(reply),
        }
        with self._lock:
            if first:
                self._rules.insert(0, entry)
            else:
                self._rules.append(entry)
            return len(self._rules)

    def fail(
        self,
        mode: str = "500",
        model: str | None = None,
        times: int | None = None,
        retry_after: float = 0.05,
        hang: float = 60.0,
        path: str = "chat",
    ) -> int:
        """Fail requests (for `model`, `times` times or until reset): 500 / 503 / 429 (with Retry-After) /
        timeout (hang for `hang` s) / malformed (broken JSON) / 401. `path`: "chat", "embeddings" or "any"."""
        if mode not in FAILURE_MODES:
            raise ValueError(f"mode must be one of {FAILURE_MODES}")
        with self._lock:
            self._failures.append(
                {
                    "model": model,
                    "times": times,
                    "path": path,
                    "reply": {"error": mode, "retry_after": retry_after, "hang": hang},
                }
            )
            return len(self._failures)

    def heal(self, model: str | None = None) -> None:
        """Drop failure rules (for `model`, or all)."""
        with self._lock:
            self._failures = [f for f in self._failures if model is not None and f["model"] != model]

    def configure(
        self,
        latency: float | None = None,
        dim: int | None = None,
        models: list[str] | None = None,
        api_key: str | None = None,
        record: bool | None = None,
    ) -> dict:
        with self._lock:
            if latency is not None:
                self.latency = float(latency)
            if dim is not None:
                self.dim = int(dim)
            if models is not None:
                self.models = list(models)
            if api_key is not None:
                self.api_key = api_key or None
            if record is not None:
                self.record = bool(record)
            return {"latency": self.latency, "dim": self.dim, "models": self.models, "record": self.record}

    def reset(self) -> None:
        """Forget scripts, rules, failures and recorded requests (keeps latency / dim)."""
        with self._lock:
            self._queue.clear()
            self._rules.clear()
            self._failures.clear()
            self._requests.clear()
            self._counts.clear()

    # --- inspection ------------------------------------------------------------------------------
    def requests(self, path: str | None = None, model: str | None = None) -> list[dict]:
        """Recorded requests: {"path", "model", "body", "authorization", "at", "status"}."""
        with self._lock:
            return [
                r
                for r in self._requests
                if (path is None or r["path"] == path) and (model is None or r["model"] == model)
            ]

    def stats(self) -> dict:
        """Request counts by "<path> <model> <status>" (kept even when recording is off)."""
        with self._lock:
            return dict(self._counts)

    # --- used by the handlers ----------------------------------------------------------------------
    def _log(self, path: str, model: str, body: dict, headers, status: int) -> None:
        with self._lock:
            key = f"{path} {model} {status}"
            self._counts[key] = self._counts.get(key, 0) + 1
            if self.record:
                self._requests.append(
                    {
                        "path": path,
                        "model": model,
                        "body": body,
                        "status": status,
                        "authorization": headers.get("Authorization", ""),
                        "at": time.time(),
                    }
                )

    def _take(self, entries: list[dict], match) -> dict | None:
        for i, entry in enumerate(entries):
            if match(entry):
                if entry.get("times") is not None:
                    entry["times"] -= 1
                    if entry["times"] <= 0:
                        del entries[i]
                return entry["reply"]
        return None

    def _choose(self, path: str, model: str, body: dict) -> dict:
        with self._lock:
            reply = self._take(
                self._failures, lambda f: f["path"] in (path, "any") and (f["model"] is None or f["model"] == model)
            )
            if reply is None and path == "chat":
                reply = self._take(self._queue, lambda q: q["model"] is None or q["model"] == model)
                if reply is None:
                    reply = self._take(self._rules, lambda r: _matches(r, model, body))
            return dict(reply or {})


def _error(status: int, message: str, headers: dict | None = None) -> web.Response:
    kind = {429: "rate_limit_error", 401: "authentication_error"}.get(status, "server_error")
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": str(status)}}, status=status, headers=headers
    )


async def _failure(state: State, reply: dict) -> web.StreamResponse | None:
    mode = reply.get("error")
    if not mode:
        return None
    if mode == "timeout":
        try:
            await asyncio.wait_for(state.shutdown.wait(), timeout=float(reply.get("hang", 60.0)))
        except TimeoutError:
            pass
        return _error(504, "fake upstream timeout")
    if mode == "429":
        retry = float(reply.get("retry_after", 0.05))
        return _error(
            429,
            "fake rate limit",
            {"Retry-After": str(max(0, math.ceil(retry))), "retry-after-ms": str(int(retry * 1000))},
        )
    if mode == "malformed":
        return web.Response(status=200, text='{"id": "broken", "choices": [{"mess', content_type="application/json")
    return _error(int(mode), f"fake {mode}")


def _prompt_tokens(messages: list[dict]) -> int:
    return sum(len(text_of(m.get("content"))) + 4 for m in messages)


def _tool_calls(reply: dict) -> list[dict]:
    calls = []
    for i, call in enumerate(reply.get("tool_calls") or []):
        arguments = call.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(
            {
                "id": call.get("id") or f"call_{uuid.uuid4().hex[:12]}_{i}",
                "type": "function",
                "function": {"name": call["name"], "arguments": arguments},
            }
        )
    return calls


CONTROL_OPS = ("script", "rule", "fail", "heal", "configure", "reset", "requests", "stats")


class Handlers:
    """The server's endpoints over one State."""

    def __init__(self, state: State):
        self.state = state

    def _authorised(self, request: web.Request) -> bool:
        key = self.state.api_key
        return key is None or request.headers.get("Authorization", "") == f"Bearer {key}"

    async def _prelude(self, request: web.Request, path: str) -> tuple[dict, str, dict, web.StreamResponse | None]:
        """(body, model, scripted reply, early response: 401 or a scripted failure) of a request."""
        body = await request.json()
        model = body.get("model", "")
        if not self._authorised(request):
            self.state._log(path, model, body, request.headers, 401)
            return body, model, {}, _error(401, "bad api key")
        reply = self.state._choose(path, model, body)
        latency = float(reply.get("latency", self.state.latency))
        if latency > 0:
            await asyncio.sleep(latency)
        failed = await _failure(self.state, reply)
        if failed is not None:
            self.state._log(path, model, body, request.headers, failed.status)
        return body, model, reply, failed

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, model, reply, early = await self._prelude(request, "chat")
        if early is not None:
            return early
        messages = body.get("messages") or []
        tool_calls = _tool_calls(reply)
        content = _content(reply, messages, tool_calls)
        usage = _usage(reply, messages, content, tool_calls)
        finish = reply.get("finish_reason") or ("tool_calls" if tool_calls else "stop")
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:16]}", int(time.time())
        self.state._log("chat", model, body, request.headers, 200)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            answer = (ident, created, model, content, tool_calls, finish, usage, include_usage)
            return await _stream(request, *answer)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return web.json_response(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": usage,
            }
        )

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body, model, _reply, early = await self._prelude(request, "embeddings")
        if early is not None:
            return early
        texts = body.get("input", "")
        if isinstance(texts, str):
            texts = [texts]
        texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in texts]
        dim = int(body.get("dimensions") or self.state.dim)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = embed_text(text, dim)
            if as_base64:
                vector = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(len(t) for t in texts)
        self.state._log("embeddings", model, body, request.headers, 200)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response({"object": "list", "data": data, "model": model, "usage": usage})

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "wxcs-fake"} for m in self.state.models]
        return web.json_response({"object": "list", "data": data})

    async def control(self, request: web.Request) -> web.Response:
        op = request.match_info["op"]
        if op not in CONTROL_OPS:
            return _error(404, f"unknown op {op}")
        kwargs = await request.json() if request.can_read_body else {}
        return web.json_response({"result": getattr(self.state, op)(**kwargs)})


def _content(reply: dict, messages: list[dict], tool_calls: list[dict]) -> str | None:
    if "content" in reply:
        return reply["content"]
    if tool_calls:
        return None
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    return "模拟回复：" + text_of(last_user.get("content"))[:200]


def _usage(reply: dict, messages: list[dict], content: str | None, tool_calls: list[dict]) -> dict:
    scripted = reply.get("usage") or {}
    prompt_tokens = int(scripted.get("input_tokens", _prompt_tokens(messages)))
    answer_tokens = len(content or "") + sum(len(c["function"]["arguments"]) for c in tool_calls)
    completion_tokens = int(scripted.get("output_tokens", answer_tokens))
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def build_app(state: State) -> web.Application:
    handlers = Handlers(state)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", handlers.chat)
    app.router.add_post("/v1/embeddings", handlers.embeddings)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_post("/_control/{op}", handlers.control)
    return app


async def _stream(request, ident, created, model, content, tool_calls, finish, usage, include_usage):
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)

    async def send(delta: dict | None, finish_reason=None, usage_obj=None) -> None:
        chunk: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if usage_obj is not None:
            chunk["usage"] = usage_obj
        await response.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())

    await send({"role": "assistant", "content": ""})
    text = content or ""
    step = max(1, len(text) // 3)
    for i in range(0, len(text), step):
        await send({"content": text[i : i + step]})
    for i, call in enumerate(tool_calls):
        await send({"tool_calls": [{"index": i, "id": call["id"], "type": "function", "function": call["function"]}]})
    await send({}, finish_reason=finish)
    if include_usage:
        await send(None, usage_obj=usage)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


class ServerThread:
    """The server on its own event loop in a daemon thread. `base_url` ends with /v1."""

    def __init__(self, state: State, host: str = "127.0.0.1", port: int = 0):
        self.state, self.host, self.port = state, host, port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fake-openai", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner, self.port = self._loop.run_until_complete(start(self.state, self.host, self.port))
        except BaseException as exc:  # reported to start()'s caller
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        async def shutdown():
            self.state.shutdown.set()
            await self._runner.cleanup()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()


async def start(state: State, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start serving on the running loop; returns (runner, actual port)."""
    state.shutdown = asyncio.Event()
    runner = web.AppRunner(build_app(state), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
    await site.start()
    actual = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, actual


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Loopback OpenAI-compatible test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 = any free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension")
    parser.add_argument("--api-key", default=None, help="require this bearer key (default: accept any)")
    parser.add_argument("--no-record", action="store_true", help="count requests but do not keep their bodies")
    args = parser.parse_args(argv)
    state = State(latency=args.latency, dim=args.dim, api_key=args.api_key, record=not args.no_record)

    async def serve() -> None:
        runner, port = await start(state, args.host, args.port)
        print(f"listening on http://{args.host}:{port}/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            state.shutdown.set()
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
