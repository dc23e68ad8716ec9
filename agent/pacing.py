"""Human-like pacing: one policy the runtime follows and the simulator enforces.

Before each send the runtime waits `delay_for(text)`: the rest of the minimum gap since the last
send, a typing delay per character (capped), random jitter, and — when a per-minute or daily cap is
reached or it is quiet hours — until the send is allowed again. The simulator keeps its own copy of
the policy and refuses (and counts) any send that breaks the gap, the caps or quiet hours.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class PacingConfig:
    min_gap_s: float = 3.0  # between two sends (any chat)
    typing_s_per_char: float = 0.12  # a person types ~8 Chinese characters a second
    max_typing_s: float = 8.0
    jitter_s: float = 1.5  # uniform 0..jitter added to every send
    per_minute_cap: int = 12
    daily_cap: int = 800
    quiet_hours: str | None = None  # "23:00-07:00": no sends in that window (local time)

    @classmethod
    def immediate(cls) -> PacingConfig:
        """No pacing at all (tests, benchmarks)."""
        return cls(min_gap_s=0, typing_s_per_char=0, max_typing_s=0, jitter_s=0, per_minute_cap=0, daily_cap=0)


def parse_quiet_hours(value: str | None) -> tuple[int, int] | None:
    """ "23:00-07:00" → (1380, 420) minutes since midnight; raises ValueError when malformed."""
    if not value:
        return None
    try:
        start, end = value.split("-")
        return _minutes(start), _minutes(end)
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"quiet_hours must look like 23:00-07:00, got {value!r}") from exc


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.strip().split(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(hhmm)
    return h * 60 + m


class PacingPolicy:
    def __init__(self, config: PacingConfig | None = None, *, clock=time.time, rng: random.Random | None = None):
        self.config = config or PacingConfig()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._quiet = parse_quiet_hours(self.config.quiet_hours)
        self._last_send: float | None = None
        self._minute: deque[float] = deque()
        self._day: str = ""
        self._day_count = 0

    # -- what the runtime asks -------------------------------------------------------------------
    def typing_delay(self, text: str) -> float:
        return min(len(text) * self.config.typing_s_per_char, self.config.max_typing_s)

    def wait_until_allowed(self, now: float | None = None) -> float:
        """Seconds from `now` until a send breaks neither the gap, the caps nor quiet hours."""
        now = self._clock() if now is None else now
        wait = 0.0
        if self._last_send is not None and self.config.min_gap_s:
            wait = max(wait, self._last_send + self.config.min_gap_s - now)
        cap = self.config.per_minute_cap
        if cap:
            recent = [t for t in self._minute if t > now - 60]
            if len(recent) >= cap:
                wait = max(wait, recent[-cap] + 60 - now)
        if self.config.daily_cap and self._count_today(now) >= self.config.daily_cap:
            wait = max(wait, self._seconds_to_midnight(now))
        quiet = self._quiet_remaining(now + wait)
        return max(0.0, wait + quiet)

    def delay_for(self, text: str, now: float | None = None) -> float:
        """Total wait before sending `text`: allowed-time, then typing, then jitter."""
        jitter = self._rng.uniform(0, self.config.jitter_s) if self.config.jitter_s else 0.0
        return self.wait_until_allowed(now) + self.typing_delay(text) + jitter

    def record(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        self._last_send = now
        self._minute.append(now)
        while self._minute and self._minute[0] <= now - 60:
            self._minute.popleft()
        self._count_today(now)
        self._day_count += 1

    # -- what the simulator checks ---------------------------------------------------------------
    def violation(self, now: float | None = None) -> str | None:
        """Why a send at `now` breaks the policy, or None."""
        now = self._clock() if now is None else now
        c = self.config
        if self._last_send is not None and c.min_gap_s and now - self._last_send < c.min_gap_s * 0.98:
            return f"gap {now - self._last_send:.2f}s < min_gap {c.min_gap_s}s"
        if c.per_minute_cap and sum(1 for t in self._minute if t > now - 60) >= c.per_minute_cap:
            return f"per-minute cap {c.per_minute_cap} reached"
        if c.daily_cap and self._count_today(now) >= c.daily_cap:
            return f"daily cap {c.daily_cap} reached"
        if self._quiet_remaining(now) > 0:
            return f"quiet hours {c.quiet_hours}"
        return None

    # -- helpers ---------------------------------------------------------------------------------
    def _count_today(self, now: float) -> int:
        day = datetime.fromtimestamp(now).strftime("%Y-%m-%d")
        if day != self._day:
            self._day, self._day_count = day, 0
        return self._day_count

    @staticmethod
    def _seconds_to_midnight(now: float) -> float:
        moment = datetime.fromtimestamp(now)
        midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - moment).total_seconds()

    def _quiet_remaining(self, at: float) -> float:
        """Seconds from `at` to the end of quiet hours (0 outside them)."""
        if not self._quiet:
            return 0.0
        start, end = self._quiet
        moment = datetime.fromtimestamp(at)
        minute = moment.hour * 60 + moment.minute + moment.second / 60
        inside = (start <= minute < end) if start < end else (minute >= start or minute < end)
        if not inside:
            return 0.0
        until = (end - minute) % (24 * 60)
        return until * 60
