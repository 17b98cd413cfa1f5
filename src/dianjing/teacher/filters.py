"""Filters: each a small function that returns the reason for rejecting a text, or None.

The reasons are counted, as they are, in the report; the rejected records and their reason go
to rejected.jsonl in the work folder. Lengths are counted in ROUGE tokens (`eval.text.tokenize`:
a Chinese/Japanese character or a word), so one limit means about the same for Chinese and English.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from dianjing.eval.text import tokenize

# Things a text-only model cannot take in or produce. English ones match whole words;
# Chinese ones (traditional and simplified) as substrings, so they are kept specific.
UNSERVABLE_EN = ("image", "images", "picture", "pictures", "photo", "photos", "graph", "graphs", "chart",
                 "charts", "diagram", "file", "files", "attachment", "map", "maps", "draw", "drawing",
                 "plot", "video", "videos", "audio", "recording", "go to")
UNSERVABLE_ZH = ("圖片", "图片", "圖像", "图像", "照片", "圖表", "图表", "畫出", "画出", "繪製", "绘制", "畫一",
                 "画一", "檔案", "档案", "附件", "地圖", "地图", "影片", "視頻", "视频", "音訊", "音频", "錄音",
                 "录音")


def _word_pattern(words: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


_EN = _word_pattern(UNSERVABLE_EN)


def empty(text: str) -> str | None:
    return "empty" if not text.strip() else None


def starts_with_punctuation(text: str) -> str | None:
    s = text.strip()
    if s and unicodedata.category(s[0])[0] in "PS":
        return "starts with punctuation"
    return None


def starts_with_non_letter(text: str) -> str | None:
    s = text.strip()
    if s and not unicodedata.category(s[0]).startswith("L"):
        return "starts with a non-letter"
    return None


def too_short(text: str, min_tokens: int) -> str | None:
    return f"too short (< {min_tokens} tokens)" if len(tokenize(text)) < min_tokens else None


def too_long(text: str, max_tokens: int) -> str | None:
    return f"too long (> {max_tokens} tokens)" if len(tokenize(text)) > max_tokens else None


def unservable(text: str, extra: tuple[str, ...] = ()) -> str | None:
    """Asks for something a text model cannot see or make (image, graph, file, draw, …)."""
    words = _EN if not extra else _word_pattern(UNSERVABLE_EN + tuple(w for w in extra if w.isascii()))
    zh = UNSERVABLE_ZH + tuple(w for w in extra if not w.isascii())
    if words.search(text) or any(w in text for w in zh):
        return "needs what a text model cannot serve (image, graph, file, draw, …)"
    return None


def instruction_filters(min_tokens: int, max_tokens: int, extra_keywords: tuple[str, ...] = ()
                        ) -> list[Callable[[str], str | None]]:
    """The instruction checks, cheapest first (de-duplication comes after them, in the pipeline)."""
    return [empty, starts_with_punctuation, starts_with_non_letter,
            lambda s: too_short(s, min_tokens), lambda s: too_long(s, max_tokens),
            lambda s: unservable(s, extra_keywords)]


def first_reason(text: str, checks: list[Callable[[str], str | None]]) -> str | None:
    for check in checks:
        why = check(text)
        if why:
            return why
    return None


# --- instances ----------------------------------------------------------------------------------


def empty_output(inp: str, out: str) -> str | None:
    return "empty output" if not out.strip() else None


def output_equals_input(inp: str, out: str) -> str | None:
    norm = " ".join(out.split()).lower()
    return "output equals input" if inp.strip() and norm == " ".join(inp.split()).lower() else None


def instance_filters(max_input_tokens: int, max_output_tokens: int) -> list[Callable[[str, str], str | None]]:
    return [empty_output, output_equals_input,
            lambda i, o: "input too long" if len(tokenize(i)) > max_input_tokens else None,
            lambda i, o: "output too long" if len(tokenize(o)) > max_output_tokens else None]


def conflicts(instances: list[tuple[str, str]]) -> list[str | None]:
    """Per instance of one task: the same input with different outputs (all of them go), or the
    same input with the same output again (the repeats go)."""
    by_input: dict[str, set[str]] = {}
    for inp, out in instances:
        by_input.setdefault(" ".join(inp.split()), set()).add(out.strip())
    seen: set[tuple[str, str]] = set()
    reasons: list[str | None] = []
    for inp, out in instances:
        key = " ".join(inp.split())
        if len(by_input[key]) > 1:
            reasons.append("same input with conflicting outputs")
        elif (key, out.strip()) in seen:
            reasons.append("duplicate example")
        else:
            seen.add((key, out.strip()))
            reasons.append(None)
    return reasons
