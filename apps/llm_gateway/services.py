"""The LLM gateway: `await complete(messages, route=...)` and `await embed(texts)`.

For each entry of the route (provider, model), in order:
1. one Redis round trip: the entry's circuit breaker (apps.llm_gateway.breaker) and the budget
   reservation (apps.costs.services.reserve) — an open circuit skips the entry, a refused budget applies
   its policy: `cheap` → restart on the `cheap` route, where that budget still counts but no longer
   refuses (if the cheap route fails too: offline), `kb_only` → offline answer,
   `block` / `handoff` → BudgetExceeded(policy=...), `alert` → never refuses;
2. the call through `openai.AsyncOpenAI` (aiohttp transport, one client per provider + base URL + key per
   event loop, `max_retries=0`: retries are ours) with a per-attempt timeout; on 429 / 5xx / timeouts /
   connection errors: retry with exponential backoff + jitter, honouring Retry-After, up to
   LLM_RETRIES times, then the next entry; other errors (4xx, malformed answers) go to the next entry;
3. success: usage and cost (price table in memory) go back to the caller at once; budget settle, daily
   counters and the usage record are written by a task right after (costs.track_soon; `drain()` waits).
When every entry failed (or none is configured), the offline provider answers: settings.LLM_OFFLINE_ANSWERER
(`offline_answer(messages) -> str | None`, sync or async; the knowledge base's by default) or a polite
apology, with Completion.offline=True. `offline_fallback=False` raises GatewayError instead.

Sync callers (Celery tasks, commands): `apps.core.aio.run(complete(...))`.
"""

import asyncio
import email.utils
import functools
import inspect
import logging
import random
import time
import uuid
import weakref

import openai
from django.conf import settings
from django.utils.module_loading import import_string
from openai import AsyncOpenAI, DefaultAioHttpClient
from openai.types.chat import ChatCompletion

from apps.costs import services as costs
from apps.llm_gateway import aredis, breaker, config, metrics
from apps.llm_gateway.config import Entry, GatewayConfig
from apps.llm_gateway.types import (
    Attempt,
    BudgetExceeded,
    Completion,
    Embeddings,
    EmbeddingUnavailable,
    GatewayError,
    NoEmbeddingModel,
    ToolCall,
    Usage,
)

logger = logging.getLogger(__name__)

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = weakref.WeakKeyDictionary()


def client_for(entry: Entry) -> AsyncOpenAI:
    """One AsyncOpenAI per (provider, base URL, key) per event loop (connection pools are per loop)."""
    loop = asyncio.get_running_loop()
    per_loop = _clients.get(loop)
    if per_loop is None:
        per_loop = _clients[loop] = {}
    p = entry.provider
    key = (p.name, p.api_base, p.api_key)
    client = per_loop.get(key)
    if client is None:
        client = per_loop[key] = AsyncOpenAI(
            api_key=p.api_key, base_url=p.api_base, max_retries=0, http_client=DefaultAioHttpClient()
        )
    return client


def reset_gateway() -> None:
    """Forget cached configuration, prices, budgets and clients (tests; after changing settings)."""
    config.invalidate()
    costs.invalidate()
    _clients.clear()
    aredis.reset()
    breaker.reset_local()
    costs.store.local.clear()


async def drain() -> None:
    """Wait until the usage of every finished call on this loop is tracked (tests; before a loop closes)."""
    await costs.drain()


def circuit_states() -> dict[str, str]:
    """{"provider/model": "closed" | "half_open" | "open"} (sync; for monitoring)."""
    return breaker.states()


# --- helpers --------------------------------------------------------------------------------------
_RETRYABLE = (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


def _classify(exc: BaseException) -> tuple[str, bool, bool]:
    """(outcome, retryable, counts against the circuit)."""
    if isinstance(exc, (openai.APITimeoutError, TimeoutError)):
        return "timeout", True, True
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited", True, True
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status >= 500 or status == 408:
            return "error", True, True
        return "error", False, False  # 4xx: our request or our key; the model itself is fine
    if isinstance(exc, openai.APIConnectionError):
        return "error", True, True
    return "error", False, True  # malformed answers and the like


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _backoff(n: int) -> float:
    """Exponential backoff with full jitter in [base·2ⁿ/2, base·2ⁿ], capped."""
    ceiling = min(settings.LLM_BACKOFF_MAX, settings.LLM_BACKOFF_BASE * (2**n))
    return random.uniform(ceiling / 2, ceiling)


def _text_len(messages: list[dict]) -> int:
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(part.get("text", "")) for part in content if isinstance(part, dict))
        total += 4
    return total


def _estimate(cfg: costs.CostConfig, entry: Entry, input_chars: int, max_tokens: int | None) -> float:
    """A deliberately generous cost estimate for the reservation (one token per character of prompt)."""
    price_in, price_out, _known = costs.price_for(cfg, entry.provider.name, entry.model, entry.provider.kind)
    output = max_tokens or entry.max_tokens or settings.LLM_ESTIMATE_OUTPUT_TOKENS
    return costs.cost_of(price_in, price_out, input_chars, output)


async def _preflight(entry: Entry, agent: str, estimate: float, exempt: frozenset[int] = frozenset()):
    """Circuit check + budget reservation for one entry, in one Redis round trip (both scripts go out in
    the same pipeline): (allowed, circuit state, failures counted, reservation | refusal | None)."""
    p, m = entry.provider.name, entry.model
    (allowed, state, failures), reserved = await asyncio.gather(
        breaker.op(p, m, "allow"), costs.reserve(p, m, agent, estimate, exempt)
    )
    if not allowed:
        if isinstance(reserved, costs.Reservation):
            await costs.release(reserved)
        metrics.CIRCUIT.labels(p, m).set(state)
        return False, state, failures, None
    return True, state, failures, reserved


async def _circuit(entry: Entry, name: str, state: int, failures: int = 1) -> int:
    """Report an outcome to the breaker; returns the new state. A success on a closed circuit with no
    failures counted needs no round trip (the hot path)."""
    if name == "success" and state == breaker.CLOSED and not failures:
        return state
    new_state = (await breaker.op(entry.provider.name, entry.model, name))[1]
    metrics.CIRCUIT.labels(entry.provider.name, entry.model).set(new_state)
    if new_state == breaker.OPEN and state != breaker.OPEN:
        logger.warning("circuit open for %s (cool-down %ss)", entry.label, settings.LLM_CIRCUIT_COOLDOWN)
    return new_state


async def offline_answer(messages: list[dict]) -> str:
    """The offline provider's text: the configured answerer's (knowledge base) or the apology."""
    path = settings.LLM_OFFLINE_ANSWERER
    answer = None
    if path:
        try:
            answerer = import_string(path)
        except ImportError:
            answerer = None  # that app is not there (yet): apology
        if answerer is not None:
            try:
                if inspect.iscoroutinefunction(answerer):
                    answer = await answerer(messages)
                else:
                    from apps.llm_gateway.dbwork import run_db

                    answer = await run_db(answerer, messages)
            except Exception:
                logger.exception("offline answerer %s failed", path)
    if isinstance(answer, dict):
        answer = answer.get("content") or answer.get("answer")
    return answer or settings.LLM_OFFLINE_APOLOGY


async def _offline(
    messages, reason: str, attempts: list[Attempt], started: float, route: str, budget_policy: str = ""
) -> Completion:
    t0 = time.perf_counter()
    content = await offline_answer(messages)
    attempts.append(Attempt("offline", "offline", "ok", (time.perf_counter() - t0) * 1000, reason))
    metrics.OFFLINE.labels(reason).inc()
    metrics.FALLBACKS.labels(route, "offline").inc()
    return Completion(
        content=content,
        provider="offline",
        model="offline",
        finish_reason="offline",
        offline=True,
        attempts=attempts,
        latency_ms=(time.perf_counter() - started) * 1000,
        route=route,
        budget_policy=budget_policy,
        offline_reason=reason,
    )


# --- complete -------------------------------------------------------------------------------------
async def complete(
    messages: list[dict],
    *,
    route: str = "default",
    tools: list[dict] | None = None,
    user=None,
    timeout: float | None = None,  # noqa: ASYNC109 - the contract's overall deadline
    temperature: float | None = None,
    max_tokens: int | None = None,
    tool_choice=None,
    offline_fallback: bool = True,
    call_id: str | None = None,
) -> Completion:
    """Chat completion through the route's fallback chain (see the module docstring).

    `user`: the agent id, or {"agent": ..., "customer": ...} — used for per-agent budgets and cost reports.
    `timeout`: overall deadline in seconds (default LLM_TOTAL_TIMEOUT); each attempt also has its own.
    Raises BudgetExceeded (policy "block" or "handoff"), or GatewayError when nothing answered and
    `offline_fallback` is False.
    """
    started = time.perf_counter()
    deadline = started + (timeout or settings.LLM_TOTAL_TIMEOUT)
    cfg = await config.get()
    cost_cfg = await costs.get_config()
    agent, _customer = costs.who(user)
    call_id = call_id or uuid.uuid4().hex
    attempts: list[Attempt] = []
    route_name = route
    entries = cfg.routes.get(route)
    if entries is None:
        logger.warning("unknown LLM route %r: using 'default'", route)
        entries = cfg.routes.get("default", [])
    input_chars = _text_len(messages)
    budget_policy = ""
    exempt: frozenset[int] = frozenset()
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        estimate = _estimate(cost_cfg, entry, input_chars, max_tokens)
        allowed, state, failures, reserved = await _preflight(entry, agent, estimate, exempt)
        if not allowed:
            attempts.append(Attempt(entry.provider.name, entry.model, "circuit_open", 0.0))
            metrics.CALLS.labels(entry.provider.name, entry.model, "circuit_open").inc()
            metrics.FALLBACKS.labels(route_name, "circuit_open").inc()
            continue
        if isinstance(reserved, costs.Refusal):
            if state == breaker.HALF_OPEN:
                await breaker.op(entry.provider.name, entry.model, "failure")  # give the probe slot back
            policy = reserved.budget.policy
            attempts.append(
                Attempt(entry.provider.name, entry.model, "budget", 0.0, f"{reserved.budget.name}: {policy}")
            )
            metrics.FALLBACKS.labels(route_name, f"budget_{policy}").inc()
            if policy == "cheap" and route_name != "cheap" and cfg.routes.get("cheap"):
                route_name, entries, i, budget_policy = "cheap", cfg.routes["cheap"], 0, "cheap"
                exempt = exempt | {reserved.budget.id}
                continue
            if policy in ("cheap", "kb_only"):
                return await _offline(messages, "budget", attempts, started, route_name, policy)
            raise BudgetExceeded(
                f"budget {reserved.budget.name!r} exhausted ({reserved.spent:.4f}/{reserved.budget.limit} CNY)",
                policy=policy,
                budget=reserved.budget.name,
                scope=reserved.budget.scope,
            )
        result = await _call_entry(
            entry, messages, tools, tool_choice, temperature, max_tokens, deadline, state, failures, attempts
        )
        if result is None:
            await costs.release(reserved)
            metrics.FALLBACKS.labels(route_name, "failed").inc()
            if time.perf_counter() >= deadline:
                break
            continue
        response, latency_ms = result
        choice = response.choices[0]
        usage = Usage(
            input_tokens=getattr(response.usage, "prompt_tokens", 0) or 0,
            output_tokens=getattr(response.usage, "completion_tokens", 0) or 0,
        )
        tracked = costs.track_soon(
            cost_cfg,
            entry.provider.name,
            entry.model,
            usage.input_tokens,
            usage.output_tokens,
            user,
            call_id=call_id,
            route=route_name,
            latency_ms=latency_ms,
            reservation=reserved,
            provider_kind=entry.provider.kind,
        )
        _observe(entry, latency_ms, usage, tracked.cost)
        message = choice.message
        return Completion(
            content=message.content or "",
            provider=entry.provider.name,
            model=entry.model,
            usage=usage,
            tool_calls=[
                ToolCall(c.id, c.function.name, c.function.arguments)
                for c in (message.tool_calls or [])
                if getattr(c, "function", None) is not None
            ],
            cost=tracked.cost,
            latency_ms=(time.perf_counter() - started) * 1000,
            attempts=attempts,
            finish_reason=choice.finish_reason or "",
            route=route_name,
            budget_policy=budget_policy,
            call_id=tracked.call_id,
            price_known=tracked.price_known,
        )
    if not offline_fallback:
        raise GatewayError("no model answered: " + "; ".join(f"{a.provider}/{a.model} {a.outcome}" for a in attempts))
    return await _offline(
        messages, "unavailable" if entries else "no_provider", attempts, started, route_name, budget_policy
    )


def chat_body(entry: Entry, messages, tools=None, tool_choice=None, temperature=None, max_tokens=None) -> dict:
    """The JSON body of a chat completion request for this route entry."""
    body: dict = {"model": entry.model, "messages": messages}
    if tools:
        body["tools"] = tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
    t = temperature if temperature is not None else entry.temperature
    if t is not None:
        body["temperature"] = t
    mt = max_tokens or entry.max_tokens
    if mt:
        body["max_tokens"] = mt
    return body


def _observe(entry: Entry, latency_ms: float, usage: Usage, cost: float) -> None:
    p, m = entry.provider.name, entry.model
    metrics.CALLS.labels(p, m, "ok").inc()
    metrics.DURATION.labels(p, m).observe(latency_ms / 1000)
    metrics.TOKENS.labels(p, m, "input").inc(usage.input_tokens)
    metrics.TOKENS.labels(p, m, "output").inc(usage.output_tokens)
    metrics.COST.labels(p, m).inc(cost)


async def _call_entry(
    entry: Entry,
    messages,
    tools,
    tool_choice,
    temperature,
    max_tokens,
    deadline: float,
    state: int,
    failures: int,
    attempts: list[Attempt],
    kind: str = "chat",
    texts=None,
):
    """Try one entry with retries. Returns (response, latency_ms) or None (move on to the next entry)."""
    client = client_for(entry)
    per_attempt = entry.timeout or entry.provider.timeout or settings.LLM_TIMEOUT
    if kind == "chat":
        body = chat_body(entry, messages, tools, tool_choice, temperature, max_tokens)

        def call(timeout):  # noqa: ASYNC109 - the per-attempt timeout, as openai's own methods take it
            # The SDK's documented `client.post` for a body that is plain JSON already: the same request,
            # auth, transport, errors and ChatCompletion parsing as `chat.completions.create`, without its
            # per-call TypedDict transform of the body (≈ 0.5 ms of CPU per call, half the client's cost).
            # test_chat_body_needs_no_sdk_transform pins that the transform leaves such bodies unchanged.
            return client.post("/chat/completions", cast_to=ChatCompletion, body=body, options={"timeout": timeout})

    else:
        call = functools.partial(client.embeddings.create, model=entry.model, input=texts)
    for n in range(settings.LLM_RETRIES + 1):
        remaining = deadline - time.perf_counter()
        if remaining <= 0.01:
            attempts.append(Attempt(entry.provider.name, entry.model, "timeout", 0.0, "deadline"))
            return None
        attempt_timeout = min(per_attempt, remaining)
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(attempt_timeout + 1.0):
                response = await call(timeout=attempt_timeout)
            if kind == "chat" and not getattr(response, "choices", None):
                raise ValueError("answer without choices")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is an attempt outcome
            latency = (time.perf_counter() - t0) * 1000
            outcome, retryable, counts = _classify(exc)
            attempts.append(
                Attempt(entry.provider.name, entry.model, outcome, latency, f"{type(exc).__name__}: {str(exc)[:200]}")
            )
            metrics.CALLS.labels(entry.provider.name, entry.model, outcome).inc()
            if counts:
                await _circuit(entry, "failure", state)
            elif state == breaker.HALF_OPEN:
                await _circuit(entry, "success", state)  # the model answered (our request was bad)
            if not retryable or n == settings.LLM_RETRIES:
                return None
            allowed, state, failures = await breaker.op(entry.provider.name, entry.model, "allow")
            if not allowed:
                return None  # the circuit opened meanwhile (maybe through other processes)
            delay = _backoff(n)
            hinted = _retry_after(exc)
            if hinted is not None:
                if hinted > settings.LLM_RETRY_AFTER_MAX:
                    return None  # the provider wants a long pause: try the next entry instead
                delay = max(delay, hinted)
            if time.perf_counter() + delay >= deadline:
                return None
            await asyncio.sleep(delay)
            continue
        latency = (time.perf_counter() - t0) * 1000
        attempts.append(Attempt(entry.provider.name, entry.model, "ok", latency))
        await _circuit(entry, "success", state, failures)
        return response, latency
    return None


# --- embed ----------------------------------------------------------------------------------------
async def embed(
    texts: list[str],
    *,
    route: str = "embedding",
    user=None,
    timeout: float | None = None,  # noqa: ASYNC109 - overall deadline, like complete()
) -> Embeddings:
    """Embeddings through the route's chain; raises EmbeddingUnavailable when no model answers (callers fall
    back to keyword retrieval) or the budget refuses."""
    started = time.perf_counter()
    deadline = started + (timeout or settings.LLM_TOTAL_TIMEOUT)
    cfg: GatewayConfig = await config.get()
    cost_cfg = await costs.get_config()
    agent, _customer = costs.who(user)
    attempts: list[Attempt] = []
    chars = sum(len(t) for t in texts)
    for entry in cfg.routes.get(route) or []:
        price_in, _po, _k = costs.price_for(cost_cfg, entry.provider.name, entry.model, entry.provider.kind)
        allowed, state, failures, reserved = await _preflight(entry, agent, costs.cost_of(price_in, 0, chars, 0))
        if not allowed:
            attempts.append(Attempt(entry.provider.name, entry.model, "circuit_open", 0.0))
            continue
        if isinstance(reserved, costs.Refusal):
            if state == breaker.HALF_OPEN:
                await breaker.op(entry.provider.name, entry.model, "failure")
            attempts.append(Attempt(entry.provider.name, entry.model, "budget", 0.0, reserved.budget.name))
            continue
        result = await _call_entry(
            entry, None, None, None, None, None, deadline, state, failures, attempts, kind="embedding", texts=texts
        )
        if result is None:
            await costs.release(reserved)
            continue
        response, latency_ms = result
        tokens = getattr(response.usage, "prompt_tokens", 0) or 0
        tracked = costs.track_soon(
            cost_cfg,
            entry.provider.name,
            entry.model,
            tokens,
            0,
            user,
            call_id=uuid.uuid4().hex,
            kind="embedding",
            route=route,
            latency_ms=latency_ms,
            reservation=reserved,
            provider_kind=entry.provider.kind,
        )
        _observe(entry, latency_ms, Usage(tokens, 0), tracked.cost)
        return Embeddings(
            vectors=[list(d.embedding) for d in sorted(response.data, key=lambda d: d.index)],
            provider=entry.provider.name,
            model=entry.model,
            usage=Usage(tokens, 0),
            cost=tracked.cost,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
    if not attempts:
        raise NoEmbeddingModel(f"no embedding model configured for route {route!r}")
    raise EmbeddingUnavailable(
        "no embedding model answered: " + "; ".join(f"{a.provider}/{a.model} {a.outcome}" for a in attempts)
    )


def complete_sync(messages: list[dict], **kwargs) -> Completion:
    """`complete` for sync callers, on the process's shared event loop."""
    from apps.core import aio

    return aio.run(complete(messages, **kwargs))
