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

# CNY per 1k tokens (input, output), seeded into the price table (admin edits them afterwards).
SEED_PRICES: dict[tuple[str, str], tuple[str, str]] = {
    ("qwen", "qwen-max"): ("0.04", "0.12"),
    ("qwen", "qwen-plus"): ("0.02", "0.06"),
    ("qwen", "qwen-turbo"): ("0.0003", "0.0006"),
    ("qwen", "text-embedding-v3"): ("0.0005", "0"),
    ("glm", "glm-4"): ("0.05", "0.05"),
    ("glm", "glm-4-flash"): ("0.0001", "0.0001"),
    ("glm", "embedding-3"): ("0.0005", "0"),
    ("deepseek", "deepseek-chat"): ("0.001", "0.002"),
    ("deepseek", "deepseek-reasoner"): ("0.004", "0.016"),
    ("openai", "gpt-4"): ("0.21", "0.42"),
    ("openai", "gpt-3.5-turbo"): ("0.003", "0.006"),
    ("openai", "gpt-4o"): ("0.018", "0.072"),
    ("openai", "gpt-4o-mini"): ("0.0011", "0.0044"),
    ("openai", "text-embedding-3-small"): ("0.00015", "0"),
    ("claude", "claude-sonnet-4-5"): ("0.022", "0.11"),
    ("claude", "claude-haiku-4-5"): ("0.0072", "0.036"),
    ("gemini", "gemini-2.0-flash"): ("0.0007", "0.0029"),
    ("gemini", "gemini-2.0-flash-lite"): ("0.00055", "0.0022"),
    ("gemini", "text-embedding-004"): ("0", "0"),
    ("moonshot", "moonshot-v1-8k"): ("0.012", "0.012"),
    ("moonshot", "moonshot-v1-32k"): ("0.024", "0.024"),
    ("ernie", "ernie-4.0-8k"): ("0.03", "0.09"),
    ("ernie", "ernie-speed-8k"): ("0.0001", "0.0001"),
    ("ernie", "embedding-v1"): ("0.0005", "0"),
}
