"""Token-by-token generation with a KV cache, sampling, stop sequences and streaming.

Shared by `dianjing chat` and (later) `dianjing serve`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from dianjing.data.templates import ChatTemplate


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


def prompt_ids(tokenizer, template: ChatTemplate, messages: list[dict]) -> list[int]:
    text = template.render(messages, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _sample(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    if p.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / p.temperature, dim=-1)
    if p.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < p.top_p
        sorted_p = sorted_p * keep
        return int(order[torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)])
    return int(torch.multinomial(probs, 1, generator=gen))


@torch.inference_mode()
def stream(model, tokenizer, ids: list[int], params: SamplingParams,
           stop_strings: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield pieces of text as they are generated; stops at EOS or at a stop string."""
    gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    stops = [s for s in (*stop_strings, *params.stop) if s]
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gcfg = getattr(model, "generation_config", None)
    if gcfg is not None and gcfg.eos_token_id is not None:
        eos |= set(gcfg.eos_token_id if isinstance(gcfg.eos_token_id, list) else [gcfg.eos_token_id])
    past = None
    inp = torch.tensor([ids], dtype=torch.long)
    out: list[int] = []
    sent = 0  # characters of the decoded text already yielded
    hold = max((len(s) for s in stops), default=0)  # text held back while it may start a stop string
    for _ in range(params.max_new_tokens):
        res = model(input_ids=inp, past_key_values=past, use_cache=True)
        past = res.past_key_values
        nxt = _sample(res.logits[0, -1], params, gen)
        if nxt in eos:
            break
        out.append(nxt)
        text = tokenizer.decode(out, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 character; wait for the rest
            inp = torch.tensor([[nxt]])
            continue
        cut = min((text.find(s, max(0, sent - hold)) for s in stops if s in text), default=-1) if stops else -1
        if cut >= 0:
            if cut > sent:
                yield text[sent:cut]
            return
        safe = len(text) - hold
        if safe > sent:
            yield text[sent:safe]
            sent = safe
        inp = torch.tensor([[nxt]])
    text = tokenizer.decode(out, skip_special_tokens=True)
    if len(text) > sent:
        yield text[sent:]


def complete(model, tokenizer, template: ChatTemplate, messages: list[dict], params: SamplingParams) -> str:
    ids = prompt_ids(tokenizer, template, messages)
    return "".join(stream(model, tokenizer, ids, params, template.stop_strings))
