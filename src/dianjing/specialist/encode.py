"""Examples → token ids for an encoder-style head, the same way for every tokenizer.

Inputs are assembled by hand from text encoded without special tokens, so BERT's WordPiece
and a decoder's byte-level BPE go through one code path:

    encoder (has [CLS]/[SEP]):  [CLS] a [SEP] (b [SEP])      token type ids 0 … 0 (1 … 1)
    decoder:                    <bos> a (\\n b) <eos>          pooled at the final <eos>

Tagging maps words to tokens by character offsets of the joined sentence (labels on the
first token of each word, -100 on the rest). Extractive QA slides a window over the
context with `doc_stride` tokens of overlap; each window knows the character span of every
context token, so predicted token spans map back to the original text.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from dianjing.errors import ConfigError

IGNORE = -100


@dataclass
class Feature:
    input_ids: list[int]
    token_type_ids: list[int] | None = None
    label: int | None = None                 # classify/pair
    labels: list[int] | None = None          # tag: per token, IGNORE where not a word's first token
    start: int | None = None                 # extract-qa: answer token span (0, 0 = not in this window)
    end: int | None = None
    example: int = 0                         # index of the example this feature came from
    word_index: list[int] | None = None      # tag: token position → word index (-1 = special/not first)
    offsets: list[tuple[int, int] | None] | None = None  # extract-qa: token → char span in the context


@dataclass
class EncodeStats:
    examples: int = 0
    features: int = 0
    truncated: int = 0
    words_cut: int = 0          # tag: words beyond max_length (predicted "O", counted as wrong when tagged)
    answers_outside: int = 0    # extract-qa: training answers that no window holds in full
    notes: Counter = field(default_factory=Counter)

    def summary(self) -> dict:
        return {"examples": self.examples, "features": self.features, "truncated": self.truncated,
                "words_cut": self.words_cut, "answers_outside_windows": self.answers_outside}


class Encoder:
    """Knows how a tokenizer wants its inputs framed; built once per run."""

    def __init__(self, tokenizer, max_length: int, use_token_types: bool):
        self.tok = tokenizer
        self.max_length = max_length
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.encoder_style = cls is not None and sep is not None
        if self.encoder_style:
            self.prefix, self.middle, self.suffix = [cls], [sep], [sep]
        else:
            bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
            self.prefix = [bos] if bos is not None else []
            self.middle = self.ids("\n")
            self.suffix = [eos] if eos is not None else []
        self.use_token_types = use_token_types and self.encoder_style

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False, verbose=False)["input_ids"]  # we truncate ourselves

    def frame(self, a: list[int], b: list[int] | None = None) -> tuple[list[int], list[int] | None, int]:
        """Specials around one or two pieces; returns ids, token types and where `a` starts."""
        if b is None:
            ids = self.prefix + a + self.suffix
            types = [0] * len(ids)
        else:
            first = self.prefix + a + self.middle
            ids = first + b + self.suffix
            types = [0] * len(first) + [1] * (len(b) + len(self.suffix))
        return ids, (types if self.use_token_types else None), len(self.prefix)

    def budget(self, pair: bool) -> int:
        return self.max_length - len(self.prefix) - len(self.suffix) - (len(self.middle) if pair else 0)

    # -- classify / pair -----------------------------------------------------------
    def encode_text(self, examples, label_ids: dict[str, int] | None, stats: EncodeStats) -> list[Feature]:
        out = []
        for i, ex in enumerate(examples):
            a = self.ids(ex.text)
            b = self.ids(ex.text_b) if ex.text_b is not None else None
            room = self.budget(b is not None)
            if len(a) + (len(b) if b else 0) > room:
                stats.truncated += 1
                if b is None:
                    a = a[:room]
                else:  # longest first, as BERT does
                    while len(a) + len(b) > room:
                        if len(a) >= len(b):
                            a = a[:-1]
                        else:
                            b = b[:-1]
            ids, types, _ = self.frame(a, b)
            label = label_ids[ex.label] if (label_ids is not None and ex.label is not None) else None
            out.append(Feature(ids, types, label=label, example=i))
        stats.examples += len(examples)
        stats.features += len(out)
        return out

    # -- tag -----------------------------------------------------------------------
    def encode_tags(self, examples, tag_ids: dict[str, int] | None, stats: EncodeStats) -> list[Feature]:
        out = []
        room = self.budget(False)
        for i, ex in enumerate(examples):
            ids: list[int] = []
            first_of_word: list[int] = []   # per token: word index if it is the word's first token, else -1
            for w, word in enumerate(ex.tokens):
                # words after the first carry a leading space so BPE/SentencePiece see a word start
                piece = self.ids(word if w == 0 or self.encoder_style else " " + word)
                if not piece:
                    piece = self.ids(self.tok.unk_token or "?")[:1] or [self.tok.pad_token_id]
                first_of_word += [w] + [-1] * (len(piece) - 1)
                ids += piece
            if len(ids) > room:
                stats.truncated += 1
                kept_words = len({w for w in first_of_word[:room] if w >= 0})
                stats.words_cut += len(ex.tokens) - kept_words
                ids, first_of_word = ids[:room], first_of_word[:room]
            full, types, start = self.frame(ids)
            word_index = [-1] * start + first_of_word + [-1] * (len(full) - start - len(first_of_word))
            labels = None
            if tag_ids is not None and ex.tags is not None:
                labels = [tag_ids[ex.tags[w]] if w >= 0 else IGNORE for w in word_index]
            out.append(Feature(full, types, labels=labels, example=i, word_index=word_index))
        stats.examples += len(examples)
        stats.features += len(out)
        return out

    # -- extract-qa ----------------------------------------------------------------
    def encode_qa(self, examples, stride: int, stats: EncodeStats, training: bool) -> list[Feature]:
        out = []
        for i, ex in enumerate(examples):
            q = self.ids(ex.question)
            q = q[: max(1, self.max_length // 4)]  # long questions are cut so the context keeps room
            enc = self.tok(ex.context, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            ctx, offs = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
            room = self.budget(True) - len(q)
            if room < 8:
                raise ConfigError(f"data.max_length is {self.max_length}: after the question ({len(q)} tokens) and "
                                  f"the special tokens only {max(0, room)} context tokens fit in a window (8 at least)",
                                  fix=f"raise data.max_length to at least {self.max_length + 8 - room}")
            step = max(1, room - min(stride, room - 1))
            windows = []
            s = 0
            while True:
                windows.append((s, min(len(ctx), s + room)))
                if s + room >= len(ctx):
                    break
                s += step
            if len(windows) > 1:
                stats.truncated += 1
            answer_spans = []
            for text, start in ex.answers:
                answer_spans.append((start, start + len(text)))
            found = False
            for ws, we in windows:
                ids, types, _ = self.frame(q, ctx[ws:we])
                first = len(self.prefix) + len(q) + len(self.middle)
                offsets: list[tuple[int, int] | None] = [None] * len(ids)
                for k in range(ws, we):
                    offsets[first + k - ws] = offs[k]
                start_tok = end_tok = 0
                if answer_spans:
                    a0, a1 = answer_spans[0]
                    if offs[ws][0] <= a0 and a1 <= offs[we - 1][1]:  # the whole answer is in this window
                        st = next((k for k in range(ws, we) if offs[k][1] > a0 and offs[k][1] > offs[k][0]), None)
                        en = next((k for k in range(we - 1, ws - 1, -1)
                                   if offs[k][0] < a1 and offs[k][1] > offs[k][0]), None)
                        if st is not None and en is not None and st <= en:
                            start_tok, end_tok = first + st - ws, first + en - ws
                            found = True
                out.append(Feature(ids, types, start=start_tok, end=end_tok, example=i, offsets=offsets))
            if training and answer_spans and not found:
                stats.answers_outside += 1
        stats.examples += len(examples)
        stats.features += len(out)
        return out
