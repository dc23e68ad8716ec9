"""WeChat drivers: `wxauto` (WeChat 3.9), `wxauto4` (WeChat 4.x) and `simulator`."""

from agent.drivers.base import ChatKind, ContentKind, InboundMessage, Origin, WeChatDriver


def create_driver(name: str, **options) -> WeChatDriver:
    """The driver called `name`, built with `options` (the `driver:` section of the config)."""
    if name == "simulator":
        from agent.drivers.simulator import SimulatorDriver

        return SimulatorDriver(**options)
    if name in ("wxauto", "wxauto4"):
        from agent.drivers.wxauto import WxautoDriver

        return WxautoDriver(module=name, **options)
    raise ValueError(f"unknown driver {name!r} (choose wxauto, wxauto4 or simulator)")


__all__ = ["ChatKind", "ContentKind", "InboundMessage", "Origin", "WeChatDriver", "create_driver"]
