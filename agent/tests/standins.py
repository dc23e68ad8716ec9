"""Stand-ins for the wxauto (39.x, `gcwxauto` wheel) / wxauto4 (41.x) API, following the libraries'
documented and shipped behaviour, so the drivers can be tested off Windows:

- ``WeChat()``; ``AddListenChat(nickname, callback)`` → ``Chat`` (or a falsy ``WxResponse``); the
  library calls ``callback(msg, chat)`` from its own listener threads; ``RemoveListenChat``,
  ``StopListening``, ``IsOnline``, ``GetMyInfo``; ``listen`` maps nickname → (chat, callback) and the
  library drops an entry when the chat window is closed.
- ``Chat.SendMsg(msg, who=None, clear=True, at=None, exact=False)`` → ``WxResponse`` (a dict whose
  truth is ``status == "成功"``); ``Chat.ChatInfo()`` → ``{"chat_type": "friend" | "group", "chat_name"}``;
  ``Chat.GetAllMessage()`` → what the window shows.
- Messages: ``.attr`` friend / self / system / time, ``.type`` text / image / ..., ``.content``,
  ``.sender``, ``.sender_remark``, ``.id``.
- The legacy 3.9 API: ``AddListenChat(who=...)`` and ``GetListenMessage()`` → ``{chat: [msg]}`` with
  the kind in ``.type`` (friend / self / sys / time).
Every call records the thread it ran on, so tests can check that all UI work happens on one thread.
"""

from __future__ import annotations

import itertools
import threading

_ids = itertools.count(1)


class WxResponse(dict):
    def __init__(self, status: str, message: str | None = None, data=None):
        super().__init__(status=status, message=message, data=data)

    def __bool__(self):
        return self["status"] == "成功"

    @classmethod
    def success(cls, message=None):
        return cls("成功", message)

    @classmethod
    def failure(cls, message):
        return cls("失败", message)


class Msg:
    def __init__(
        self,
        content: str,
        *,
        attr: str = "friend",
        type: str = "text",
        sender: str = "",  # noqa: A002
        remark: str = "",
    ):
        self.attr = attr
        self.type = type
        self.content = content
        self.sender = sender if attr == "friend" else attr
        self.sender_remark = remark or self.sender
        self.id = f"runtime-{next(_ids)}"


class LegacyMsg:
    def __init__(self, kind: str, content: str, sender: str = ""):
        self.type = kind  # friend / self / sys / time / recall
        self.content = content
        self.sender = sender or kind
        self.id = f"legacy-{next(_ids)}"


class Chat:
    def __init__(self, wx: FakeWeChat, who: str, kind: str):
        self.wx = wx
        self.who = who
        self.kind = kind
        self.history: list[Msg] = []

    def __str__(self):
        return self.who

    def ChatInfo(self):  # noqa: N802 - the library's names
        self.wx.record("ChatInfo")
        return {"chat_type": "group" if self.kind == "group" else "friend", "chat_name": self.who}

    def GetAllMessage(self):  # noqa: N802
        self.wx.record("GetAllMessage")
        return list(self.history)

    def SendMsg(self, msg, who=None, clear=True, at=None, exact=False):  # noqa: N802
        self.wx.record("SendMsg")
        return self.wx.send(self.who, msg, at)


class FakeWeChat:
    """wxauto 39.x / wxauto4 41.x `WeChat` (callback listening)."""

    def __init__(self, nickname: str = "客服小王", chats: dict[str, str] | None = None):
        self.nickname = nickname
        self.chats = chats or {}  # name → "private" | "group"
        self.listen: dict[str, tuple[Chat, object]] = {}
        self.windows: dict[str, Chat] = {}
        self.online = True
        self.sent: list[dict] = []
        self.fail_next_send: str | None = None
        self.threads: set[str] = set()
        self.calls: list[str] = []
        self.history: dict[str, list[Msg]] = {}

    def record(self, call: str) -> None:
        self.threads.add(threading.current_thread().name)
        self.calls.append(call)

    # -- the library's API -----------------------------------------------------------------------
    def AddListenChat(self, nickname, callback):  # noqa: N802
        self.record("AddListenChat")
        if nickname in self.listen:
            return WxResponse.failure("该聊天已监听")
        if nickname not in self.chats:
            return WxResponse.failure("找不到聊天窗口")
        chat = Chat(self, nickname, self.chats[nickname])
        chat.history = list(self.history.get(nickname, []))
        self.windows[nickname] = chat
        self.listen[nickname] = (chat, callback)
        return chat

    def RemoveListenChat(self, nickname, close_window=True):  # noqa: N802
        self.record("RemoveListenChat")
        self.listen.pop(nickname, None)
        return WxResponse.success()

    def StopListening(self, remove=True):  # noqa: N802
        self.record("StopListening")
        if remove:
            self.listen.clear()

    def IsOnline(self):  # noqa: N802
        self.record("IsOnline")
        return self.online

    def GetMyInfo(self):  # noqa: N802
        self.record("GetMyInfo")
        return {"nickname": self.nickname, "id": "wxid_test"}

    def SendMsg(self, msg, who=None, clear=True, at=None, exact=False):  # noqa: N802
        self.record("SendMsg")
        return self.send(who, msg, at, exact=exact)

    # -- helpers for tests -----------------------------------------------------------------------
    def send(self, chat, msg, at, exact=True):
        if not self.online:
            return WxResponse.failure("微信未登录")
        if self.fail_next_send:
            reason, self.fail_next_send = self.fail_next_send, None
            return WxResponse.failure(reason)
        self.sent.append({"chat": chat, "text": msg, "at": at, "exact": exact})
        return WxResponse.success()

    def deliver(self, chat: str, msg: Msg) -> None:
        """The library's listener thread calls the callback with a new message."""
        entry = self.listen.get(chat)
        if entry is None:
            return
        chat_obj, callback = entry
        chat_obj.history.append(msg)
        worker = threading.Thread(target=callback, args=(msg, chat_obj), name="wxauto-listener")
        worker.start()
        worker.join()

    def close_window(self, chat: str) -> None:
        """The user closed the listened sub-window: the library drops the listener."""
        self.listen.pop(chat, None)


class LegacyWeChat(FakeWeChat):
    """Older 3.9 builds: AddListenChat(who=...) and polling GetListenMessage()."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending: dict[str, list[LegacyMsg]] = {}

    def AddListenChat(self, who, savepic=False, savefile=False, savevoice=False):  # noqa: N802
        self.record("AddListenChat")
        if who not in self.chats:
            return WxResponse.failure("找不到聊天窗口")
        self.listen[who] = (Chat(self, who, self.chats[who]), None)
        return None  # the old API returned nothing

    def GetListenMessage(self, who=None):  # noqa: N802
        self.record("GetListenMessage")
        out = {}
        for chat, msgs in list(self.pending.items()):
            if msgs:
                out[self.listen[chat][0]] = msgs
        self.pending = {}
        return out

    def queue(self, chat: str, msg: LegacyMsg) -> None:
        self.pending.setdefault(chat, []).append(msg)
