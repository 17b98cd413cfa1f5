"""Token-by-token generation with a KV cache, sampling, stop sequences and streaming.

`stream` generates for one prompt (used by `dianjing chat`). The batched functions below
(`prefill`, `decode_step`, `merge`, `select`, `trim`) keep many sequences in one left-padded
KV cache, so `dianjing serve` can add and drop requests between steps (continuous batching).

Every tensor they make (input ids, masks, positions, row indices) is made on the model's device:
`model_device(model)`, or for a running batch the device of its mask, which prefill made there.
The sampled tokens come back to Python as ints.
Seeded generators stay on the CPU, so a seed draws the same uniform numbers on any device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from dianjing.data.templates import ChatTemplate

# transformers 5.24 renamed the KV-cache argument and output field `past_key_values` to `cache`
# (the old name warns on every call and goes in 5.40); earlier 5.x releases know only the old one
try:
    from transformers.modeling_outputs import CausalLMOutputWithPast as _Out

    CACHE = "cache" if "cache" in _Out.__dataclass_fields__ else "past_key_values"
except ImportError:  # pragma: no cover
    CACHE = "past_key_values"


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    top_k: int = 0  # sample among the k likeliest tokens only (0: no limit); top-p then applies within them


def prompt_ids(tokenizer, template: ChatTemplate, messages: list[dict]) -> list[int]:
    text = template.render(messages, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def model_device(model) -> torch.device:
    """The device a model's weights are on: where every tensor fed to it is created."""
    dev = getattr(model, "device", None)  # transformers models (and PEFT models, through their base)
    if isinstance(dev, torch.device):
        return dev
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return param.device if param is not None else torch.device("cpu")


def eos_ids(model, tokenizer, template: ChatTemplate | None = None) -> set[int]:
    """Token ids that end an answer: the tokenizer's EOS, the model's generation_config EOS ids and,
    given the chat template, its end-of-turn token (Gemma's <end_of_turn>, ChatML's <|im_end|>): the
    token training supervised at the end of every answer, whatever the model folder's config says."""
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gcfg = getattr(model, "generation_config", None)
    if gcfg is not None and gcfg.eos_token_id is not None:
        eos |= set(gcfg.eos_token_id if isinstance(gcfg.eos_token_id, list) else [gcfg.eos_token_id])
    return eos | turn_end_ids(tokenizer, template)


def turn_end_ids(tokenizer, template: ChatTemplate | None) -> set[int]:
    """The template's end of turn as a token id, where it is one token of the vocabulary (else none:
    a text end of turn is caught by the template's stop strings)."""
    if template is None:
        return set()
    import jinja2

    from dianjing.data.locate import shape

    try:
        end = shape(template).end
    except (jinja2.TemplateError, ValueError):
        return set()
    ids = tokenizer(end, add_special_tokens=False)["input_ids"] if end else []
    return set(ids) if len(ids) == 1 and end in tokenizer.get_vocab() else set()


MIN_TEMPERATURE = 1e-6  # below this sampling is greedy: in fp32 (x - max) / t underflows t to 0 (0 / 0 = NaN)
# near 1e-38, and long before that the distribution is a point mass up to rounding
TOP_P_FIRST_K = 1024  # top-p looks for the nucleus among this many likeliest tokens before sorting them all


def _sample(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    """One token from `logits` [vocab]: greedy at temperature 0, else temperature + top-k / top-p sampling.

    Draws by inverting the cumulative distribution (torch.multinomial over a 262k vocabulary costs
    ~7 ms a token on a CPU, this ~0.3 ms), and finds the top-p nucleus among the likeliest
    TOP_P_FIRST_K tokens when they hold enough mass, sorting the whole vocabulary (~30 ms) only
    when they do not. Both are exact.
    """
    if p.temperature < MIN_TEMPERATURE:
        return int(logits.argmax())
    probs = full = _probs(logits, p.temperature)
    order = None
    if 0 < p.top_k < full.numel():
        probs, order = full.topk(p.top_k)  # sorted, likeliest first; the draw below renormalises
        if p.top_p < 1.0:
            probs = probs * (probs.cumsum(0) - probs < p.top_p * probs.sum())
    elif p.top_p < 1.0:
        probs, order = full.topk(min(TOP_P_FIRST_K, full.numel()))  # sorted, likeliest first
        if float(probs.sum()) < p.top_p and len(order) < logits.numel():  # a wide nucleus: sort them all
            probs, order = full.sort(descending=True)
        probs = probs * (probs.cumsum(0) - probs < p.top_p)
    cdf = probs.cumsum(0)
    # drawn where the generator lives (a seeded one is on the CPU, so a seed draws the same u on any device)
    u = torch.rand(1, generator=gen, dtype=cdf.dtype, device=gen.device if gen is not None else cdf.device)
    u = u.to(cdf.device) * cdf[-1]
    i = min(int(torch.searchsorted(cdf, u, right=True)), len(cdf) - 1)
    return int(order[i]) if order is not None else i


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / temperature), shifted by the largest logit first, so that a small
    temperature sends the other terms to -inf (probability 0) instead of the quotients to inf
    (inf - inf: NaN, after which the draw always picked the last token)."""
    x = logits.float()
    return torch.softmax((x - x.max()) / temperature, dim=-1)


def sample_rows(logits: torch.Tensor, params: list[SamplingParams],
                gens: list[torch.Generator | None]) -> list[int]:
    """One next token per row of `logits` [rows, vocab], each row with its own parameters."""
    if all(p.temperature < MIN_TEMPERATURE for p in params):
        return logits.argmax(-1).tolist()
    return [_sample(logits[i], p, g) for i, (p, g) in enumerate(zip(params, gens))]


class AnswerStart:
    """Drops the whitespace an answer starts with: templates like "AI: answer" put a space
    before it, and that space belongs to the template. Call it on each piece in order."""

    def __init__(self):
        self.started = False

    def __call__(self, piece: str) -> str:
        if not self.started:
            piece = piece.lstrip()
            self.started = bool(piece)
        return piece


class TextStream:
    """Turns generated token ids into text pieces, holding back text that may begin a stop string.

    `push` returns the text that is now safe to show; once a stop string appears, `stopped` is
    set and the text before it is the last piece. `finish` returns what was held back.
    """

    def __init__(self, tokenizer, stops: tuple[str, ...] | list[str] = ()):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=0)
        self.ids: list[int] = []
        self.sent = 0  # characters of the decoded text already returned
        self.stopped = False

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 character; wait for the rest
            return ""
        start = max(0, self.sent - self.hold)
        cuts = [c for c in (text.find(s, start) for s in self.stops) if c >= 0]
        if cuts:
            self.stopped = True
            cut = min(cuts)
            piece = text[self.sent:cut] if cut > self.sent else ""
            self.sent = max(self.sent, cut)
            return piece
        safe = len(text) - self.hold
        if safe > self.sent:
            piece, self.sent = text[self.sent:safe], safe
            return piece
        return ""

    def finish(self) -> str:
        if self.stopped:
            return ""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        piece, self.sent = text[self.sent:], len(text)
        return piece


@torch.inference_mode()
def stream(model, tokenizer, ids: list[int], params: SamplingParams,
           stop_strings: tuple[str, ...] = (), template: ChatTemplate | None = None) -> Iterator[str]:
    """Yield pieces of text as they are generated; stops at EOS (and the template's end of turn) or at a
    stop string."""
    gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    eos = eos_ids(model, tokenizer, template)
    text = TextStream(tokenizer, (*stop_strings, *params.stop))
    past = None
    dev = model_device(model)
    inp = torch.tensor([ids], dtype=torch.long, device=dev)
    for _ in range(params.max_new_tokens):
        res = model(input_ids=inp, use_cache=True, **{CACHE: past})
        past = getattr(res, CACHE)
        nxt = _sample(res.logits[0, -1], params, gen)
        if nxt in eos:
            break
        piece = text.push(nxt)
        if piece:
            yield piece
        if text.stopped:
            return
        inp = torch.tensor([[nxt]], dtype=torch.long, device=dev)
    piece = text.finish()
    if piece:
        yield piece


def complete(model, tokenizer, template: ChatTemplate, messages: list[dict], params: SamplingParams) -> str:
    ids = prompt_ids(tokenizer, template, messages)
    return "".join(stream(model, tokenizer, ids, params, template.stop_strings, template))


# --- batched generation: many sequences in one left-padded KV cache ---------------------------
#
# Every row of a batch shares one timeline of `length` columns; a row's tokens sit at the right
# end of it and the columns before them are padding, masked out by `mask`. Positions come from
# the mask (the first real token of every row is position 0), so a row gives the same logits as
# it would alone. Rows can be dropped (`select`), batches joined (`merge`: the shorter timeline
# is padded on the left) and padding columns that no row needs any more cut off (`trim`).


@dataclass
class KVBatch:
    """A KV cache for several sequences and the attention mask over its timeline."""

    cache: object  # transformers DynamicCache
    mask: torch.Tensor  # [rows, length] long; 1 = a real token, 0 = left padding

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        return self.mask.shape[1]


def _layers(cache) -> list:
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    layers = getattr(cache, "layers", None)
    if layers is None or not all(type(l) in (DynamicLayer, DynamicSlidingWindowLayer) and l.is_initialized
                                 for l in layers):
        raise TypeError(f"cannot rearrange a {type(cache).__name__} by rows; "
                        "only DynamicCache with full or sliding-window layers is supported")
    return layers


def can_rearrange(cache) -> bool:
    """Can `select`, `merge` and `trim` work on this cache? (Else serve whole batches only.)"""
    try:
        _layers(cache)
    except TypeError:
        return False
    return True


@torch.inference_mode()
def prefill(model, rows: list[list[int]], pad_id: int) -> tuple[KVBatch, torch.Tensor]:
    """Run the prompts through the model as one left-padded batch.

    Returns the batch and the logits for each row's next token, [rows, vocab].
    """
    length = max(len(r) for r in rows)
    dev = model_device(model)  # built as lists and copied to the device once, not row by row
    ids = torch.tensor([[pad_id] * (length - len(r)) + list(r) for r in rows], dtype=torch.long, device=dev)
    mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    return KVBatch(getattr(out, CACHE), mask), out.logits[:, -1]


@torch.inference_mode()
def decode_step(model, batch: KVBatch, tokens: list[int]) -> torch.Tensor:
    """Feed one token per row (extends `batch` in place); returns the next-token logits [rows, vocab]."""
    batch.mask = torch.cat([batch.mask, batch.mask.new_ones((batch.rows, 1))], dim=1)
    pos = batch.mask.sum(-1, keepdim=True) - 1
    ids = torch.tensor(tokens, dtype=torch.long, device=batch.mask.device)[:, None]  # the cache's device
    out = model(input_ids=ids, attention_mask=batch.mask,
                position_ids=pos, use_cache=True, **{CACHE: batch.cache})
    batch.cache = getattr(out, CACHE)
    return out.logits[:, -1]


def _pad_left(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = n
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def _stored(layer, length: int) -> int:
    """How many columns a layer keeps for a timeline of `length` (a sliding window keeps window-1)."""
    return min(length, layer.sliding_window - 1) if layer.is_sliding else length


def merge(a: KVBatch, b: KVBatch) -> KVBatch:
    """Join two batches (rows of `a` first); the shorter timeline is padded on the left."""
    length = max(a.length, b.length)
    for la, lb in zip(_layers(a.cache), _layers(b.cache)):
        keep = _stored(la, length)
        for name in ("keys", "values"):
            xa, xb = getattr(la, name), getattr(lb, name)
            xa = _pad_left(xa, keep - xa.shape[2], 2)
            xb = _pad_left(xb, keep - xb.shape[2], 2)
            setattr(la, name, torch.cat([xa, xb], dim=0))
        if la.is_sliding:
            la.cumulative_length = length
    mask = torch.cat([_pad_left(a.mask, length - a.length, 1), _pad_left(b.mask, length - b.length, 1)])
    return KVBatch(a.cache, mask)


def select(batch: KVBatch, keep: list[int]) -> KVBatch:
    """Keep only the rows `keep` (in that order), then drop padding no row needs."""
    idx = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
    for layer in _layers(batch.cache):
        layer.keys, layer.values = layer.keys[idx], layer.values[idx]
    return trim(KVBatch(batch.cache, batch.mask[idx]))


def trim(batch: KVBatch) -> KVBatch:
    """Cut the leading columns that are padding in every row."""
    used = batch.mask.any(dim=0).nonzero()
    cut = int(used[0]) if len(used) else batch.length
    if cut == 0:
        return batch
    length = batch.length - cut
    for layer in _layers(batch.cache):
        drop = _stored(layer, batch.length) - _stored(layer, length)
        layer.keys, layer.values = layer.keys[:, :, drop:], layer.values[:, :, drop:]
        if layer.is_sliding:
            layer.cumulative_length = length
    return KVBatch(batch.cache, batch.mask[:, cut:])


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list[list[int]], params: SamplingParams,
                   stop_strings: tuple[str, ...] = ()) -> list[str]:
    """Generate for several prompts at once (one left-padded batch); each row stops on its own."""
    batch, logits = prefill(model, prompts, tokenizer.pad_token_id)
    return continue_batch(model, tokenizer, batch, logits, params, stop_strings)


@torch.inference_mode()
def continue_batch(model, tokenizer, batch: KVBatch, logits: torch.Tensor, params: SamplingParams,
                   stop_strings: tuple[str, ...] = (), template: ChatTemplate | None = None) -> list[str]:
    """Decode every row of a prefilled batch (whose next-token logits are `logits`) until EOS (and the
    template's end of turn), a stop string or max_new_tokens; rows that finish leave the batch. Consumes `batch`."""
    eos = eos_ids(model, tokenizer, template)
    n = logits.shape[0]
    gens = [torch.Generator().manual_seed(params.seed + i) if params.seed is not None else None
            for i in range(n)]
    texts = [TextStream(tokenizer, (*stop_strings, *params.stop)) for _ in range(n)]
    out = [""] * n
    live = list(range(n))  # original index of each batch row
    for step in range(params.max_new_tokens):
        nxt = sample_rows(logits, [params] * len(live), [gens[i] for i in live])
        keep = []
        for row, (i, tok) in enumerate(zip(live, nxt)):
            if tok not in eos:
                out[i] += texts[i].push(tok)
                if not texts[i].stopped and step < params.max_new_tokens - 1:
                    keep.append(row)
                    continue
            out[i] += texts[i].finish()
        if not keep:
            break
        if len(keep) < len(live):
            batch = select(batch, keep)
            live, nxt = [live[r] for r in keep], [nxt[r] for r in keep]
        logits = decode_step(model, batch, nxt)
    return out
