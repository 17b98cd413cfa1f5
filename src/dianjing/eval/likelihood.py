"""What a model gives a continuation of a prompt: token log-probabilities from one shared KV cache.

Used by `dianjing eval` on chat runs (option accuracy, perplexity of the references) and by the
generalist's held-out scoring (option accuracy). A prompt is prefilled once (infer/generate.py's
`prefill`); each continuation is then scored on a copy of that prompt's cache, and the cache is
left for greedy or sampled generation from the same prompt.

A continuation is what the chat template adds after the generation prompt: `answer_prefix` (" " for
the plain template, "" for chatml) and the text, tokenised on its own, exactly as training's render
tokenises an answer apart from its prompt (data/render.py).
"""

from __future__ import annotations

import copy

import torch


def fit_prompt(ids: list[int], max_tokens: int | None) -> tuple[list[int], bool]:
    """Cut the middle of a too-long prompt: keep its first quarter and its end (instructions sit at
    one end or the other; the answer cue and the chat template's generation prompt at the end).
    Returns the ids and whether they were cut."""
    if not max_tokens or len(ids) <= max_tokens:
        return ids, False
    head = max_tokens // 4
    return ids[:head] + ids[len(ids) - (max_tokens - head):], True


def answer_prefix(chat) -> str:
    """The text the chat template puts between the generation prompt and the answer (" " for plain)."""
    mark = "\u2063OPTION\u2063"
    msgs = [{"role": "user", "content": "q"}]
    head = chat.render(msgs, add_generation_prompt=True)
    full = chat.render(msgs + [{"role": "assistant", "content": mark}])
    if full.startswith(head) and mark in full[len(head):]:
        return full[len(head):].split(mark)[0]
    return ""


def reference_text(chat, messages: list[dict], reference: str) -> tuple[str, bool]:
    """The text the template adds after `messages`' generation prompt when the assistant answers
    `reference`: the answer prefix, the reference and the end of the turn (up to the template's end
    token, as training supervises it), and True. A template that renders the prompt differently once
    the answer is added gives the answer prefix and the reference alone, and False."""
    head = chat.render(messages, add_generation_prompt=True)
    full = chat.render(messages + [{"role": "assistant", "content": reference}])
    if not full.startswith(head):
        return answer_prefix(chat) + reference, False
    tail = full[len(head):]
    eos = chat.eos_token or ""
    at = tail.rfind(eos) if eos else -1
    return (tail[:at + len(eos)] if at >= 0 else tail.rstrip("\n")), True


@torch.inference_mode()
def option_logprobs(model, batch, first_logits: torch.Tensor, conts: list[list[list[int]]], pad_id: int,
                    max_rows: int = 32) -> list[list[list[float]]]:
    """Per prompt, per continuation, the log-probability of each of the continuation's tokens.

    `batch` (a KVBatch from generate.prefill) is left untouched: each chunk of continuation rows
    works on a copy of its cache, one row per (prompt, continuation).
    """
    from dianjing.infer.generate import CACHE, select

    dev = batch.mask.device  # the model's: every tensor below is made there, the floats come back by .tolist()
    first = torch.log_softmax(first_logits.float(), dim=-1)
    rows = [(i, j) for i, opts in enumerate(conts) for j in range(len(opts))]
    out: list[list[list[float]]] = [[] for _ in conts]
    if not rows:
        return out
    firsts = first[torch.tensor([i for i, _ in rows], dtype=torch.long, device=dev),
                   torch.tensor([conts[i][j][0] for i, j in rows], dtype=torch.long, device=dev)].tolist()
    for (i, _), lp0 in zip(rows, firsts):
        out[i].append([lp0])
    rows = [(i, j) for i, j in rows if len(conts[i][j]) > 1]
    for s in range(0, len(rows), max_rows):
        chunk = rows[s:s + max_rows]
        kv = select(copy.deepcopy(batch), [i for i, _ in chunk])
        tails = [conts[i][j][:-1] for i, j in chunk]  # inputs: every token but the last
        length = max(len(t) for t in tails)
        ids = torch.tensor([list(t) + [pad_id] * (length - len(t)) for t in tails], dtype=torch.long, device=dev)
        mask = torch.tensor([[1] * len(t) + [0] * (length - len(t)) for t in tails], dtype=torch.long, device=dev)
        pos = kv.mask.sum(-1, keepdim=True) + torch.arange(length, device=dev)[None, :]
        logits = model(input_ids=ids, attention_mask=torch.cat([kv.mask, mask], dim=1), position_ids=pos,
                       use_cache=True, **{CACHE: kv.cache}).logits
        lp = torch.log_softmax(logits.float(), dim=-1)
        for r, (i, j) in enumerate(chunk):
            targets = torch.tensor(conts[i][j][1:], dtype=torch.long, device=dev)
            out[i][j] += lp[r, torch.arange(len(targets), device=dev), targets].tolist()
    return out
