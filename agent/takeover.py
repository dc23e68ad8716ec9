"""Human takeover: a ``self`` message in a chat that is not one of the bot's recent replies means a
person typed in WeChat on this PC. The bot pauses that chat (for `pause_s`) and tells the server."""

from __future__ import annotations

import re
import time
from collections import deque

from agent.drivers.base import MENTION_SEPARATOR

_MENTION = re.compile(rf"@[^@\s{MENTION_SEPARATOR}]+[{MENTION_SEPARATOR} ]")


def _normal(text: str) -> str:
    return _MENTION.sub("", text).strip()


class TakeoverDetector:
    def __init__(self, *, bot_echo_window_s: float = 300.0, pause_s: float = 1800.0, clock=time.monotonic):
        self.bot_echo_window_s = bot_echo_window_s
        self.pause_s = pause_s
        self._clock = clock
        self._recent: deque[tuple[float, str, str]] = deque()  # (when, chat, normalised text)
        self._paused: dict[str, float] = {}

    def expect_bot_send(self, chat: str, text: str) -> None:
        """Called before the bot sends: its echo (a self message) must not look like a human."""
        self._expire()
        self._recent.append((self._clock(), chat, _normal(text)))

    def observe_self_message(self, chat: str, text: str) -> bool:
        """A self message was seen in `chat`. True when it is a human takeover (the chat is paused)."""
        self._expire()
        normal = _normal(text)
        for i, (_, c, t) in enumerate(self._recent):
            if c == chat and t == normal:
                del self._recent[i]  # one echo per send
                return False
        self._paused[chat] = self._clock() + self.pause_s
        return True

    def paused(self, chat: str) -> bool:
        until = self._paused.get(chat)
        if until is None:
            return False
        if self._clock() >= until:
            del self._paused[chat]
            return False
        return True

    def resume(self, chat: str) -> None:
        self._paused.pop(chat, None)

    def paused_chats(self) -> list[str]:
        return [chat for chat in list(self._paused) if self.paused(chat)]

    def _expire(self) -> None:
        horizon = self._clock() - self.bot_echo_window_s
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
