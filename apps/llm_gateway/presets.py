"""The providers the product supports, all spoken to through their OpenAI-compatible endpoints.

`default_model` answers the `default` route, `cheap_model` the `cheap` route (budget degradation),
`embedding_model` the `embedding` route (empty: the provider offers none we use).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    api_base: str
    default_model: str
    cheap_model: str
    embedding_model: str = ""
    timeout: float = 30.0


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "qwen",
            "通义千问 (DashScope)",
            "https://dashscope.aliyuncs.com/compatible-mode/v1",
            "qwen-plus",
            "qwen-turbo",
            "text-embedding-v3",
        ),
        Preset("deepseek", "DeepSeek", "https://api.deepseek.com/v1", "deepseek-chat", "deepseek-chat"),
        Preset("glm", "智谱 GLM", "https://open.bigmodel.cn/api/paas/v4", "glm-4", "glm-4-flash", "embedding-3"),
        Preset("moonshot", "Moonshot (Kimi)", "https://api.moonshot.cn/v1", "moonshot-v1-8k", "moonshot-v1-8k"),
        Preset(
            "ernie",
            "文心一言 (千帆)",
            "https://qianfan.baidubce.com/v2",
            "ernie-4.0-8k",
            "ernie-speed-8k",
            "embedding-v1",
        ),
        Preset(
            "openai", "OpenAI", "https://api.openai.com/v1", "gpt-4o-mini", "gpt-3.5-turbo", "text-embedding-3-small"
        ),
        Preset("claude", "Anthropic Claude", "https://api.anthropic.com/v1/", "claude-sonnet-4-5", "claude-haiku-4-5"),
        Preset(
            "gemini",
            "Google Gemini",
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            "gemini-2.0-flash",
            "gemini-2.0-flash-lite",
            "text-embedding-004",
        ),
        Preset("custom", "自定义 OpenAI 兼容服务 (vLLM / Ollama / 代理)", "", "", ""),
    )
}
