"""The wxauto / wxauto4 driver against stand-ins of the libraries' API, and the simulator driver."""

import threading
import time

import pytest

from agent.drivers import create_driver
from agent.drivers.base import MENTION_SEPARATOR, DriverError, MentionError, MessageFilter, SendTimeout, find_mention
from agent.drivers.simulator import SimulatorDriver, append_inbox, read_outbox
from agent.drivers.wxauto import WxautoDriver
from agent.pacing import PacingConfig
from agent.tests.standins import FakeWeChat, LegacyMsg, LegacyWeChat, Msg

CHATS = {"张三": "private", "车友群": "group", "不相干": "private"}


def wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def wx():
    return FakeWeChat(chats=dict(CHATS))


def make_driver(wx, **kwargs):
    options = {"watch_chats": ["张三", "车友群"], "keepalive_s": 0.05, "wechat_factory": lambda: wx}
    options.update(kwargs)
    driver = WxautoDriver(**options)
    driver.start()
    return driver


def test_messages_are_normalised_and_filtered(wx):
    driver = make_driver(wx)
    try:
        wx.deliver("张三", Msg("你好，在吗", sender="张三", remark="张三-VIP"))
        wx.deliver("车友群", Msg(f"@客服小王{MENTION_SEPARATOR}保养多少钱", sender="李四"))
        wx.deliver("车友群", Msg("大家早上好", sender="王五"))  # group, not @ us: dropped
        wx.deliver("张三", Msg("下午 3:05", attr="time"))  # time: dropped
        wx.deliver("张三", Msg("你撤回了一条消息", attr="system"))  # system: dropped
        wx.deliver("张三", Msg("[图片]", sender="张三", type="image"))
        messages = driver.poll()
    finally:
        driver.stop()
    assert [(m.chat_name, m.text) for m in messages] == [
        ("张三", "你好，在吗"),
        ("车友群", "保养多少钱"),
        ("张三", "[图片]"),
    ]
    private, group, image = messages
    assert private.chat_kind == "private" and private.sender == "张三" and private.display_name == "张三-VIP"
    assert private.origin == "friend" and private.mentions_me is False and len(private.fingerprint) == 32
    assert group.chat_kind == "group" and group.mentions_me is True and group.sender == "李四"
    assert image.content_kind == "image"
    assert driver.poll() == []


def test_self_messages_are_returned_for_takeover_detection(wx):
    driver = make_driver(wx)
    try:
        wx.deliver("张三", Msg("我是真人，马上处理", attr="self"))
        (msg,) = driver.poll()
    finally:
        driver.stop()
    assert msg.origin == "self" and msg.text == "我是真人，马上处理"


def test_watch_list_only(wx):
    driver = make_driver(wx)
    try:
        assert set(wx.listen) == {"张三", "车友群"}  # 不相干 is not listened to
    finally:
        driver.stop()


def test_history_shown_on_first_open_is_not_replayed(wx):
    wx.history["张三"] = [Msg("昨天的问题", sender="张三"), Msg("好的", attr="self")]
    driver = make_driver(wx, history_grace_s=2.0)
    try:
        # the library re-delivers what the window showed when it opened
        for old in wx.history["张三"]:
            wx.deliver("张三", Msg(old.content, attr=old.attr, sender="张三"))
        wx.deliver("张三", Msg("新问题", sender="张三"))
        messages = driver.poll()
    finally:
        driver.stop()
    assert [m.text for m in messages] == ["新问题"]


def test_all_ui_calls_on_one_thread_with_a_queue(wx):
    driver = make_driver(wx)
    try:
        threads = []
        for i in range(5):  # sends from several threads at once
            t = threading.Thread(target=driver.send_text, args=("张三", f"回复 {i}"))
            threads.append(t)
            t.start()
        for t in threads:
            t.join()
        wait(lambda: "IsOnline" in wx.calls)
    finally:
        driver.stop()
    assert wx.threads == {"wx-ui"}
    assert sorted(s["text"] for s in wx.sent) == [f"回复 {i}" for i in range(5)]


def test_group_send_mentions_and_failures_raise(wx):
    driver = make_driver(wx)
    try:
        driver.send_text("车友群", "您好", at="李四")
        driver.send_text("其他人", "走搜索")  # not a listened window: main window, exact match
        wx.fail_next_send = "@李四 not found in the member list"
        with pytest.raises(MentionError):
            driver.send_text("车友群", "再来", at="李四")
        wx.fail_next_send = "找不到聊天窗口"
        with pytest.raises(DriverError):
            driver.send_text("张三", "失败")
    finally:
        driver.stop()
    assert wx.sent[0] == {"chat": "车友群", "text": "您好", "at": "李四", "exact": True}
    assert wx.sent[1]["chat"] == "其他人" and wx.sent[1]["exact"] is True


def test_keep_alive_reattaches_a_dropped_listener_and_tracks_online(wx):
    driver = make_driver(wx)
    try:
        wx.close_window("张三")
        wait(lambda: "张三" in wx.listen and driver.reattached == 1)
        wx.deliver("张三", Msg("又来了", sender="张三"))
        assert [m.text for m in driver.poll()] == ["又来了"]
        assert driver.status()["wx_online"] is True
        wx.online = False
        wait(lambda: driver.status()["wx_online"] is False)
    finally:
        driver.stop()
    status = driver.status()
    assert status["driver"] == "wxauto" and "ui_latency_ms" in status and status["wechat_version"]


def test_a_slow_ui_call_times_out(wx):
    driver = make_driver(wx, send_timeout_s=0.2)
    original = wx.send
    wx.send = lambda *a, **k: (time.sleep(1), original(*a, **k))[1]
    try:
        with pytest.raises(SendTimeout):
            driver.send_text("张三", "慢")
    finally:
        driver.stop()


def test_legacy_polling_api():
    wx = LegacyWeChat(chats=dict(CHATS))
    driver = make_driver(wx, listen_interval_s=0.02)
    try:
        wx.queue("张三", LegacyMsg("friend", "老版本的消息", "张三"))
        wx.queue("张三", LegacyMsg("sys", "系统消息"))
        wx.queue("张三", LegacyMsg("time", "12:00"))
        wx.queue("车友群", LegacyMsg("friend", f"@客服小王{MENTION_SEPARATOR}群里问", "李四"))
        wx.queue("车友群", LegacyMsg("friend", "群里闲聊", "王五"))
        wait(lambda: "GetListenMessage" in wx.calls)
        messages = []
        wait(lambda: messages.extend(driver.poll()) or messages)
    finally:
        driver.stop()
    assert [(m.text, m.origin, m.chat_kind) for m in messages] == [
        ("老版本的消息", "friend", "private"),
        ("群里问", "friend", "group"),
    ]
    assert wx.threads == {"wx-ui"}


def test_wxauto4_name_and_required_watch_list(wx):
    driver = create_driver("wxauto4", watch_chats=["张三"], wechat_factory=lambda: wx, keepalive_s=1)
    assert driver.name == "wxauto4"
    with pytest.raises(DriverError, match="watch_chats"):
        create_driver("wxauto", watch_chats=[])
    with pytest.raises(ValueError):
        create_driver("nope")


def test_mention_parsing():
    assert find_mention(f"@客服小王{MENTION_SEPARATOR}你好", ("客服小王",)) == (True, "你好")
    assert find_mention("你好 @客服小王", ("客服小王",)) == (True, "你好")
    assert find_mention(f"@别人{MENTION_SEPARATOR}你好", ("客服小王",)) == (False, f"@别人{MENTION_SEPARATOR}你好")
    rule = MessageFilter(mention_names=("小王",), group_requires_mention=False)
    msg = rule.build(
        chat_name="群",
        chat_kind="group",
        sender="a",
        display_name="a",
        text="没有@",
        content_kind="text",
        origin="friend",
    )
    assert msg is not None and msg.mentions_me is False


# -- simulator ------------------------------------------------------------------------------------
def test_simulator_inject_outbox_echo_and_faults(tmp_path):
    sim = SimulatorDriver(self_name="小助手", outbox_path=str(tmp_path / "out.jsonl"))
    sim.start()
    sim.inject("群1", "多少钱", sender="甲", kind="group")
    (msg,) = sim.poll()
    assert msg.mentions_me and msg.text == "多少钱" and msg.chat_kind == "group"
    sim.send_text("群1", "100 元", at="甲")
    (echo,) = sim.poll()
    assert echo.origin == "self" and echo.text == f"@甲{MENTION_SEPARATOR}100 元"
    assert read_outbox(tmp_path / "out.jsonl")[0]["at"] == ["甲"]
    sim.set_fault("logged_out")
    assert sim.status()["wx_online"] is False
    with pytest.raises(DriverError):
        sim.send_text("群1", "x")
    sim.set_fault("logged_out", False)
    sim.set_fault("window_lost")
    with pytest.raises(DriverError):
        sim.poll()
    sim.set_fault("window_lost", False)
    sim.set_fault("send_timeout")
    with pytest.raises(SendTimeout):
        sim.send_text("群1", "超时但发出去了")
    assert sim.outbox[-1]["text"] == "超时但发出去了"
    with pytest.raises(ValueError):
        sim.set_fault("unknown")


def test_simulator_inbox_file_ids_are_stable_when_reread(tmp_path):
    inbox = tmp_path / "in.jsonl"
    append_inbox(inbox, chat="张三", text="一")
    append_inbox(inbox, chat="张三", text="一")  # the same text twice: two messages
    first = SimulatorDriver(inbox_path=str(inbox))
    first.start()
    second = SimulatorDriver(inbox_path=str(inbox))  # a restarted agent reads the file again
    second.start()
    a, b = first.poll(), second.poll()
    assert len(a) == 2 and a[0].fingerprint != a[1].fingerprint
    assert [m.fingerprint for m in a] == [m.fingerprint for m in b]


def test_simulator_enforces_the_pacing_policy():
    sim = SimulatorDriver(pacing=PacingConfig(min_gap_s=0.5, typing_s_per_char=0, jitter_s=0, per_minute_cap=2))
    sim.start()
    sim.send_text("张三", "一")
    with pytest.raises(DriverError, match="pacing"):
        sim.send_text("张三", "二")  # too soon
    assert sim.pacing_violations == 1
