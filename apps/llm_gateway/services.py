"""The LLM gateway: `await complete(messages, route=...)` and `await embed(texts)`; and the writes of its
configuration (providers, routes), which bump the configuration every process keeps.

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
   counters and the usage record are written right after, off the caller's path
   (`apps.core.aio.spawn(costs.track(...))`; `await apps.core.aio.drain()` waits for them).
When every entry failed (or none is configured), the offline provider answers: `await answerer(messages)`
with the answerer named by settings.LLM_OFFLINE_ANSWERER (the knowledge base's `offline_answer`), else a
polite apology, with Completion.offline=True. `offline_fallback=False` raises GatewayError instead.

Sync callers (Celery tasks, commands, admin): `apps.core.aio.run(complete(...))`.
"""

import asyncio
import email.utils
import logging
import random
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import openai
from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string
from openai import AsyncOpenAI, DefaultAioHttpClient
from openai.types.chat import ChatCompletion

from apps.core import aio
from apps.costs import config as costs_config
from apps.costs import services as costs
from apps.llm_gateway import breaker, config, metrics
from apps.llm_gateway.config import Entry
from apps.llm_gateway.models import Provider, RouteEntry
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


# --- configuration writes ---------------------------------------------------------------------------
def save_provider(provider: Provider, *, keep_stored_key: bool = False) -> Provider:
    """Save a provider; `keep_stored_key`: a blank API key keeps the one stored (admin never shows it)."""
    if keep_stored_key and not provider.api_key and provider.pk:
        provider.api_key = Provider.objects.get(pk=provider.pk).api_key
    provider.save()
    config.CONFIG.bump()
    return provider


def delete_providers(providers) -> None:
    """Delete a queryset of providers (and their route entries)."""
    providers.delete()
    config.CONFIG.bump()


def save_route(route) -> None:
    route.save()
    config.CONFIG.bump()


def delete_routes(routes) -> None:
    """Delete a queryset of routes (and their entries)."""
    routes.delete()
    config.CONFIG.bump()


def save_route_entries(saved: list[RouteEntry], deleted: list[RouteEntry]) -> None:
    """Save and delete entries of a route's chain together."""
    with transaction.atomic():
        for entry in deleted:
            entry.delete()
        for entry in saved:
            entry.save()
        config.CONFIG.bump()


# --- the call's state -------------------------------------------------------------------------------
@dataclass
class _Call:
    """One complete() / embed() call as it walks its route."""

    user: object
    agent: str
    call_id: str
    started: float
    deadline: float
    cost_config: costs_config.CostConfig
    attempts: list[Attempt] = field(default_factory=list)
    exempt: frozenset[int] = frozenset()  # budgets that already degraded this call to the cheap route
    budget_policy: str = ""  # "cheap" / "kb_only" once a budget degraded this call

    @classmethod
    async def start(cls, user, timeout: float | None, call_id: str | None) -> "_Call":  # noqa: ASYNC109
        started = time.perf_counter()
        return cls(
            user=user,
            agent=costs.agent_and_customer(user)[0],
            call_id=call_id or uuid.uuid4().hex,
            started=started,
            deadline=started + (timeout or settings.LLM_TOTAL_TIMEOUT),
            cost_config=await costs_config.get_config(),
        )

    def priced(self, entry: Entry, usage: Usage) -> tuple[float, bool]:
        """(cost, price known) of `usage` on `entry`, from the price table in memory."""
        p = entry.provider
        price_in, price_out, known = costs_config.price_for(self.cost_config, p.name, entry.model, p.kind)
        return costs_config.cost_of(price_in, price_out, usage.input_tokens, usage.output_tokens), known

    def track(self, entry: Entry, usage: Usage, kind: str, route: str, latency_ms: float, reservation) -> None:
        """Count the call's usage and settle its reservation, off the caller's path."""
        p = entry.provider
        tracking = costs.track(
            p.name,
            entry.model,
            usage.input_tokens,
            usage.output_tokens,
            self.user,
            call_id=self.call_id,
            kind=kind,
            route=route,
            latency_ms=latency_ms,
            reservation=reservation,
            provider_kind=p.kind,
        )
        aio.spawn(tracking, what="usage tracking")


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


# --- helpers ----------------------------------------------------------------------------------------
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


def _estimate(call: _Call, entry: Entry, input_chars: int, output_tokens: int) -> float:
    """A deliberately generous cost estimate for the reservation (one token per character of prompt)."""
    return call.priced(entry, Usage(input_chars, output_tokens))[0]


async def _admit(call: _Call, entry: Entry, estimate: float, route: str):
    """Circuit check + budget reservation for one entry, in one Redis round trip (both scripts go out in
    the same pipeline). None when the circuit is open (recorded as an attempt); else
    (circuit state, failures counted, Reservation | Refusal)."""
    p, m = entry.provider.name, entry.model
    (allowed, state, failures), reserved = await asyncio.gather(
        breaker.op(p, m, "allow"), costs.reserve(p, m, call.agent, estimate, call.exempt)
    )
    if not allowed:
        if isinstance(reserved, costs.Reservation):
            await costs.release(reserved)
        metrics.CIRCUIT.labels(p, m).set(state)
        call.attempts.append(Attempt(p, m, "circuit_open", 0.0))
        metrics.CALLS.labels(p, m, "circuit_open").inc()
        metrics.FALLBACKS.labels(route, "circuit_open").inc()
        return None
    if isinstance(reserved, costs.Refusal):
        if state == breaker.HALF_OPEN:
            await breaker.op(p, m, "failure")  # give the probe slot back
        policy = reserved.budget.policy
        call.attempts.append(Attempt(p, m, "budget", 0.0, f"{reserved.budget.name}: {policy}"))
        metrics.FALLBACKS.labels(route, f"budget_{policy}").inc()
    return state, failures, reserved


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


def _observe(entry: Entry, latency_ms: float, usage: Usage, cost: float) -> None:
    p, m = entry.provider.name, entry.model
    metrics.CALLS.labels(p, m, "ok").inc()
    metrics.DURATION.labels(p, m).observe(latency_ms / 1000)
    metrics.TOKENS.labels(p, m, "input").inc(usage.input_tokens)
    metrics.TOKENS.labels(p, m, "output").inc(usage.output_tokens)
    metrics.COST.labels(p, m).inc(cost)


# --- one entry, with retries ------------------------------------------------------------------------
Send = Callable[[AsyncOpenAI, float], Awaitable]


async def _call_entry(entry: Entry, send: Send, call: _Call, state: int, failures: int):
    """Try one entry with retries: `await send(client, attempt timeout)`. Returns (response, latency_ms),
    or None: move on to the next entry."""
    client = client_for(entry)
    per_attempt = entry.timeout or entry.provider.timeout or settings.LLM_TIMEOUT
    for n in range(settings.LLM_RETRIES + 1):
        remaining = call.deadline - time.perf_counter()
        if remaining <= 0.01:
            call.attempts.append(Attempt(entry.provider.name, entry.model, "timeout", 0.0, "deadline"))
            return None
        attempt_timeout = min(per_attempt, remaining)
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(attempt_timeout + 1.0):
                response = await send(client, attempt_timeout)
        except Exception as exc:  # noqa: BLE001 - every failure is an attempt outcome
            retry = await _failed_attempt(entry, exc, (time.perf_counter() - t0) * 1000, n, state, call)
            if retry is None:
                return None
            delay, state, failures = retry
            await asyncio.sleep(delay)
            continue
        latency = (time.perf_counter() - t0) * 1000
        call.attempts.append(Attempt(entry.provider.name, entry.model, "ok", latency))
        await _circuit(entry, "success", state, failures)
        return response, latency
    return None


async def _failed_attempt(entry: Entry, exc: Exception, latency: float, n: int, state: int, call: _Call):
    """Record a failed attempt. Returns (delay, circuit state, failures) to retry after, or None: give up
    on this entry (not retryable, out of retries, circuit opened, or past the deadline)."""
    p, m = entry.provider.name, entry.model
    outcome, retryable, counts = _classify(exc)
    call.attempts.append(Attempt(p, m, outcome, latency, f"{type(exc).__name__}: {str(exc)[:200]}"))
    metrics.CALLS.labels(p, m, outcome).inc()
    if counts:
        await _circuit(entry, "failure", state)
    elif state == breaker.HALF_OPEN:
        await _circuit(entry, "success", state)  # the model answered (our request was bad)
    if not retryable or n == settings.LLM_RETRIES:
        return None
    allowed, state, failures = await breaker.op(p, m, "allow")
    if not allowed:
        return None  # the circuit opened meanwhile (maybe through other processes)
    delay = _backoff(n)
    hinted = _retry_after(exc)
    if hinted is not None:
        if hinted > settings.LLM_RETRY_AFTER_MAX:
            return None  # the provider wants a long pause: try the next entry instead
        delay = max(delay, hinted)
    if time.perf_counter() + delay >= call.deadline:
        return None
    return delay, state, failures


# --- offline ----------------------------------------------------------------------------------------
async def _offline_text(messages: list[dict]) -> str:
    """The offline provider's text: the configured answerer's (knowledge base) or the apology."""
    path = settings.LLM_OFFLINE_ANSWERER
    if path:
        try:
            answer = await import_string(path)(messages)
        except Exception:
            logger.exception("offline answerer %s failed", path)
        else:
            if answer:
                return answer
    return settings.LLM_OFFLINE_APOLOGY


async def _offline(messages: list[dict], call: _Call, reason: str, route: str) -> Completion:
    t0 = time.perf_counter()
    content = await _offline_text(messages)
    call.attempts.append(Attempt("offline", "offline", "ok", (time.perf_counter() - t0) * 1000, reason))
    metrics.OFFLINE.labels(reason).inc()
    metrics.FALLBACKS.labels(route, "offline").inc()
    return Completion(
        content=content,
        provider="offline",
        model="offline",
        finish_reason="offline",
        offline=True,
        attempts=call.attempts,
        latency_ms=(time.perf_counter() - call.started) * 1000,
        route=route,
        budget_policy=call.budget_policy,
        offline_reason=reason,
    )


# --- complete ---------------------------------------------------------------------------------------
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
    call = await _Call.start(user, timeout, call_id)
    cfg = await config.get()
    route_name, entries = route, cfg.routes.get(route)
    if entries is None:
        logger.warning("unknown LLM route %r: using 'default'", route)
        entries = cfg.routes.get("default", [])
    input_chars = _text_len(messages)
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        output_tokens = max_tokens or entry.max_tokens or settings.LLM_ESTIMATE_OUTPUT_TOKENS
        estimate = _estimate(call, entry, input_chars, output_tokens)
        admitted = await _admit(call, entry, estimate, route_name)
        if admitted is None:
            continue
        state, failures, reserved = admitted
        if isinstance(reserved, costs.Refusal):
            if reserved.budget.policy == "cheap" and route_name != "cheap" and cfg.routes.get("cheap"):
                route_name, entries, i, call.budget_policy = "cheap", cfg.routes["cheap"], 0, "cheap"
                call.exempt = call.exempt | {reserved.budget.id}
                continue
            return await _refused(messages, call, reserved, route_name)
        body = chat_body(entry, messages, tools, tool_choice, temperature, max_tokens)
        result = await _call_entry(entry, _chat_sender(body), call, state, failures)
        if result is not None:
            return _answered(call, entry, route_name, reserved, *result)
        await costs.release(reserved)
        metrics.FALLBACKS.labels(route_name, "failed").inc()
        if time.perf_counter() >= call.deadline:
            break
    if not offline_fallback:
        raise GatewayError(
            "no model answered: " + "; ".join(f"{a.provider}/{a.model} {a.outcome}" for a in call.attempts)
        )
    return await _offline(messages, call, "unavailable" if entries else "no_provider", route_name)


async def _refused(messages: list[dict], call: _Call, refusal: costs.Refusal, route: str) -> Completion:
    """A budget refused the call: answer offline ("cheap" past the cheap route, "kb_only"), or raise."""
    budget = refusal.budget
    if budget.policy in ("cheap", "kb_only"):
        call.budget_policy = budget.policy
        return await _offline(messages, call, "budget", route)
    raise BudgetExceeded(
        f"budget {budget.name!r} exhausted ({refusal.spent:.4f}/{budget.limit} CNY)",
        policy=budget.policy,
        budget=budget.name,
        scope=budget.scope,
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


def _chat_sender(body: dict) -> Send:
    async def send(client: AsyncOpenAI, timeout: float) -> ChatCompletion:  # noqa: ASYNC109 - per attempt
        # The SDK's documented `client.post` for a body that is plain JSON already: the same request,
        # auth, transport, errors and ChatCompletion parsing as `chat.completions.create`, without its
        # per-call TypedDict transform of the body (≈ 0.5 ms of CPU per call, half the client's cost).
        # test_chat_body_needs_no_sdk_transform pins that the transform leaves such bodies unchanged.
        response = await client.post(
            "/chat/completions", cast_to=ChatCompletion, body=body, options={"timeout": timeout}
        )
        if not getattr(response, "choices", None):
            raise ValueError("answer without choices")
        return response

    return send


def _answered(call: _Call, entry: Entry, route: str, reservation, response, latency_ms: float) -> Completion:
    choice = response.choices[0]
    usage = Usage(
        input_tokens=getattr(response.usage, "prompt_tokens", 0) or 0,
        output_tokens=getattr(response.usage, "completion_tokens", 0) or 0,
    )
    cost, price_known = call.priced(entry, usage)
    call.track(entry, usage, "chat", route, latency_ms, reservation)
    _observe(entry, latency_ms, usage, cost)
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
        cost=cost,
        latency_ms=(time.perf_counter() - call.started) * 1000,
        attempts=call.attempts,
        finish_reason=choice.finish_reason or "",
        route=route,
        budget_policy=call.budget_policy,
        call_id=call.call_id,
        price_known=price_known,
    )


# --- embed ------------------------------------------------------------------------------------------
async def embed(
    texts: list[str],
    *,
    route: str = "embedding",
    user=None,
    timeout: float | None = None,  # noqa: ASYNC109 - overall deadline, like complete()
) -> Embeddings:
    """Embeddings through the route's chain; raises EmbeddingUnavailable when no model answers (callers fall
    back to keyword retrieval) or the budget refuses, NoEmbeddingModel when the route has no model."""
    call = await _Call.start(user, timeout, None)
    cfg = await config.get()
    chars = sum(len(t) for t in texts)
    for entry in cfg.routes.get(route) or []:
        admitted = await _admit(call, entry, _estimate(call, entry, chars, 0), route)
        if admitted is None:
            continue
        state, failures, reserved = admitted
        if isinstance(reserved, costs.Refusal):
            continue
        result = await _call_entry(entry, _embedding_sender(entry.model, texts), call, state, failures)
        if result is None:
            await costs.release(reserved)
            continue
        response, latency_ms = result
        usage = Usage(getattr(response.usage, "prompt_tokens", 0) or 0, 0)
        cost = call.priced(entry, usage)[0]
        call.track(entry, usage, "embedding", route, latency_ms, reserved)
        _observe(entry, latency_ms, usage, cost)
        return Embeddings(
            vectors=[list(d.embedding) for d in sorted(response.data, key=lambda d: d.index)],
            provider=entry.provider.name,
            model=entry.model,
            usage=usage,
            cost=cost,
            latency_ms=(time.perf_counter() - call.started) * 1000,
        )
    if not call.attempts:
        raise NoEmbeddingModel(f"no embedding model configured for route {route!r}")
    raise EmbeddingUnavailable(
        "no embedding model answered: " + "; ".join(f"{a.provider}/{a.model} {a.outcome}" for a in call.attempts)
    )


def _embedding_sender(model: str, texts: list[str]) -> Send:
    def send(client: AsyncOpenAI, timeout: float):  # noqa: ASYNC109 - per attempt
        return client.embeddings.create(model=model, input=texts, timeout=timeout)

    return send
