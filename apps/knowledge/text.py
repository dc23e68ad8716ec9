"""Chinese text analysis for retrieval: normalisation, jieba with the domain dictionary, synonyms.

The same `Analyzer` tokenises entries at index time and questions at query time, so a synonym or a
custom word changes both sides at once. It is plain Python (no Django) so the index and the
benchmark can build it from lists.

Pipeline for one text:
1. normalise: NFKC (full-width → half-width), lower case, unit spellings (`7千瓦` → `7kw`,
   `220伏` → `220v`), alarm codes (`E1`, `e 01` → `e01`);
2. jieba (search mode: a long word also yields its sub-words) on a private `jieba.Tokenizer`
   that knows the custom words and every synonym;
3. synonyms: each token that is a variant becomes its group's canonical term;
4. stop words and punctuation dropped;
5. character bigrams of the Chinese runs, as separate low-weight terms (`~ab`), which catch
   wordings jieba segments differently.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterable

import jieba

jieba.setLogLevel(logging.WARNING)

BIGRAM_PREFIX = "~"
_CACHE_LIMIT = 200_000

# Words that carry no meaning for matching a question to an answer.
STOP_WORDS = frozenset(
    """的 了 吗 呢 啊 吧 呀 哦 嘛 么 啥 哪 我 你 您 你们 我们 他 她 它 他们 是 在 这 那 这个 那个 这样 那样
    请问 请 问 一下 下 想 想问 问下 就 也 还 都 和 与 及 或 或者 把 被 给 让 个 些 一个 一些 有 有没有 没有
    是不是 会 会不会 能 能不能 可以 可不可以 可 行 行不行 要 需要 需不需要 得 地 着 过 又 再 很 太 就是 但是
    如果 的话 还是 什么 怎么 怎么样 怎样 如何 为什么 咋 吗 么 不 没 一直 已经 上 里 中 时候 的时候 之后 以后
    回事 怎么回事 意思 什么意思 啥意思 原因 问题 情况 出现 显示 是否 哪些 哪个 哪种 多少 一样 啥子 东西
    """.split()
)
_PUNCT = re.compile(r"^[\W_]+$", re.UNICODE)
_CJK = re.compile(r"[\u4e00-\u9fff]+")
_UNIT = re.compile(r"(\d+(?:\.\d+)?)\s*(千瓦|kw|kwh|度|伏|v|安|a|米|m)(?![a-z])")
_UNIT_MAP = {
    "千瓦": "kw",
    "kw": "kw",
    "kwh": "kwh",
    "度": "kwh",
    "伏": "v",
    "v": "v",
    "安": "a",
    "a": "a",
    "米": "m",
    "m": "m",
}
_CODE = re.compile(r"(?<![a-z0-9])e\s*0*(\d{1,2})(?![0-9])")

# Built-in domain vocabulary: always known to the tokenizer, whatever the admin adds.
BASE_WORDS = (
    "充电桩 充电枪 交流桩 直流桩 家充桩 枪头 枪线 国标 美标 七孔 九孔 转接头 报警码 故障码 急停 急停按钮 "
    "漏保 漏电 漏电保护 漏电保护开关 空开 接地 地线 过压 欠压 过流 过温 继电器 粘连 电子锁 立柱 壁挂 "
    "物业 移机 报装 勘测 峰谷电 谷电 快充 慢充 车载充电机 即插即充 刷卡 充电卡 固件 指示灯 "
    "质保 保修 售后 维修 报修 发票 专票 运营平台 第三方 车位 车库 地库 电瓶车 电动自行车 "
    "多长时间 多久 多少钱 怎么办 怎么处理 怎么解决 能不能 有没有 是不是 特斯拉 比亚迪 三相 单相 "
    "待机 耗电 辐射 防水 进水 淋雨 跳闸 拔不出来 拔不下来 供电局 独立电表"
).split()


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = _UNIT.sub(lambda m: m.group(1) + _UNIT_MAP[m.group(2)], text)
    return _CODE.sub(lambda m: f"e{int(m.group(1)):02d}", text)


def parse_synonym_line(line: str) -> list[str]:
    """`质保 = 保修, 保质期` or `质保,保修,保质期` → ["质保", "保修", "保质期"] (first is canonical)."""
    parts = re.split(r"\s*[=,，、;；|/]\s*|\s+", line.strip())
    seen: list[str] = []
    for part in parts:
        part = normalize(part).strip()
        if part and part not in seen:
            seen.append(part)
    return seen


class Analyzer:
    """Tokeniser with custom words and synonym groups; thread-safe for `tokens()`."""

    def __init__(
        self, custom_words: Iterable[str] = (), synonym_groups: Iterable[Iterable[str]] = (), bigrams: bool = True
    ):
        self.bigrams = bigrams
        self._tokenizer = jieba.Tokenizer()
        self._lock = threading.Lock()
        self.synonyms: dict[str, str] = {}
        words = set(BASE_WORDS)
        for group in synonym_groups:
            group = [normalize(w).strip() for w in group if w and w.strip()]
            if len(group) < 2:
                continue
            canonical = group[0]
            words.update(group)
            for variant in group[1:]:
                self.synonyms.setdefault(variant, canonical)
        self._custom = frozenset(normalize(w).strip() for w in custom_words if w and w.strip())
        words.update(self._custom)
        self._words = sorted(w for w in words if w)
        self._initialised = False
        self._doc_cache: dict[str, tuple[str, ...]] = {}

    def _ensure(self) -> None:
        if self._initialised:
            return
        with self._lock:
            if self._initialised:
                return
            self._tokenizer.initialize()
            for word in self._words:
                # A high frequency keeps the word whole (jieba's own dictionary would split E01 or 7kw).
                self._tokenizer.add_word(word, freq=100000 if len(word) > 1 else 1000)
            self._initialised = True

    def words(self, text: str) -> list[str]:
        """Meaningful word tokens (synonyms mapped to their canonical term), in order."""
        self._ensure()
        out: list[str] = []
        for raw in self._tokenizer.cut_for_search(normalize(text)):
            token = raw.strip()
            if not token or _PUNCT.match(token):
                continue
            token = self.synonyms.get(token, token)
            if token in STOP_WORDS or (out and out[-1] == token):
                # (search mode yields a word's sub-words first: 报警 then 报警码 both map to 报警码)
                continue
            out.append(token)
        return out

    def is_custom(self, term: str) -> bool:
        return term in self._custom

    def document_tokens(self, text: str) -> list[str]:
        """`tokens` for indexed text, remembered: rebuilding the index after an edit re-tokenises
        only the entries whose text changed (the cache lives as long as this analyser, i.e. until the
        dictionary changes, and is emptied when it outgrows `_CACHE_LIMIT` texts)."""
        cached = self._doc_cache.get(text)
        if cached is None:
            if len(self._doc_cache) >= _CACHE_LIMIT:
                self._doc_cache.clear()
            cached = self._doc_cache[text] = tuple(self.tokens(text))
        return cached

    def tokens(self, text: str) -> list[str]:
        """Index / query terms: words plus (optionally) Chinese character bigrams."""
        out = self.words(text)
        if self.bigrams:
            for run in _CJK.findall(normalize(text)):
                out.extend(BIGRAM_PREFIX + run[i : i + 2] for i in range(len(run) - 1))
        return out
