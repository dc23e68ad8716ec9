"""The price table's seed: CNY per 1k tokens (input, output) of every preset provider's models. Seeded by
migration 0002 and `seed_demo`; supervisors edit the prices in admin afterwards."""

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
