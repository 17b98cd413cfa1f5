"""Batched generation and likelihoods for `dianjing eval` and `dianjing judge`, with the run's own template.

Prompts are rendered with the chat template the run was trained with (a bare model: its own or the
plain one), tokenised, cut in the middle when longer than max_prompt_tokens (counted), sorted by
length and run in batches: one prefill per batch (infer/generate.py), whose KV cache serves the
option and reference continuations (eval/likelihood.py) and then the batched decoding of the answers
(`continue_batch`, as the server's batcher decodes: each row stops at EOS, a stop string or the
token budget and leaves the batch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

LOGIT_BUDGET = 2 ** 27  # logits held at once while scoring continuations (rows × tokens × vocab)


@dataclass
class Job:
    """One prompt: the messages to answer, and what to score after them."""

    messages: list[dict]
    reference: str | None = None  # scored token by token (perplexity) when given
    options: list[str] | None = None


@dataclass
class Result:
    answer: str | None = None
    option_logprobs: list[list[float]] | None = None
    reference_logprobs: list[float] | None = None
    reference_in_template: bool = True  # False: the template rendered the prompt differently with the answer
    prompt_tokens: int = 0
    cut: bool = False


@dataclass
class Settings:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    batch_size: int = 8
    max_prompt_tokens: int | None = 1024
    generate: bool = True
    stop: list[str] = field(default_factory=list)

    def sampling(self):
        from dianjing.infer.generate import SamplingParams

        return SamplingParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                              stop=list(self.stop), seed=self.seed)


def pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def run_jobs(model, tokenizer, chat, jobs: list[Job], settings: Settings, log=None) -> list[Result]:
    """Every job's answer (settings.generate) and the log-probabilities of its options and reference."""
    from dianjing.eval.likelihood import answer_prefix, fit_prompt, option_logprobs
    from dianjing.infer.generate import continue_batch, prefill

    pad = pad_id(tokenizer)
    prefix = answer_prefix(chat)
    results = [Result() for _ in jobs]
    prompts = []
    for job, res in zip(jobs, results):
        ids, res.cut = fit_prompt(_encode(tokenizer, chat.render(job.messages, add_generation_prompt=True)),
                                  settings.max_prompt_tokens)
        res.prompt_tokens = len(ids)
        prompts.append(ids)
    order = sorted(range(len(jobs)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    t0, done = time.monotonic(), 0
    vocab = None
    for s in range(0, len(order), settings.batch_size):
        rows = order[s:s + settings.batch_size]
        batch, last = prefill(model, [prompts[i] for i in rows], pad)
        vocab = last.shape[-1]
        conts, kinds = [], []
        for i in rows:
            c, k = _continuations(tokenizer, chat, prefix, jobs[i], results[i], pad)
            conts.append(c)
            kinds.append(k)
        if any(conts):
            longest = max(len(c) for cs in conts for c in cs)
            lps = option_logprobs(model, batch, last, conts, pad, max_rows=max(1, LOGIT_BUDGET // vocab // longest))
            for i, lp, k in zip(rows, lps, kinds):
                if "reference" in k:
                    results[i].reference_logprobs = lp[k.index("reference")]
                if "option" in k:
                    results[i].option_logprobs = [x for x, kind in zip(lp, k) if kind == "option"]
        if settings.generate:
            answers = continue_batch(model, tokenizer, batch, last, settings.sampling(), tuple(chat.stop_strings),
                                     chat)
            for i, a in zip(rows, answers):
                results[i].answer = a.strip()
        done += len(rows)
        if log is not None:
            el = time.monotonic() - t0
            log(f"  {done}/{len(jobs)} prompts, {el:.0f}s, eta {el / done * (len(jobs) - done):.0f}s")
    return results


def _continuations(tokenizer, chat, prefix: str, job: Job, res: Result, pad: int) -> tuple[list[list[int]], list[str]]:
    """The token ids to score after one prompt (its reference, its options) and what each one is."""
    from dianjing.eval.likelihood import reference_text

    conts, kinds = [], []
    if job.reference is not None:
        text, res.reference_in_template = reference_text(chat, job.messages, job.reference)
        conts.append(_encode(tokenizer, text) or [pad])
        kinds.append("reference")
    for o in job.options or []:
        conts.append(_encode(tokenizer, prefix + o) or [pad])
        kinds.append("option")
    return conts, kinds


def answer_conversations(model, tokenizer, chat, conversations: list[list[str]], settings: Settings,
                         system_prompt: str | None = None, log=None) -> list[list[str]]:
    """Answer multi-turn questions turn by turn: turn k is asked after the model's own answers to the
    turns before it. All questions' k-th turns are one batched pass."""
    answers: list[list[str]] = [[] for _ in conversations]
    depth = max((len(c) for c in conversations), default=0)
    for k in range(depth):
        idx = [i for i, c in enumerate(conversations) if len(c) > k]
        jobs = []
        for i in idx:
            msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
            for j in range(k):
                msgs += [{"role": "user", "content": conversations[i][j]}, {"role": "assistant", "content": answers[i][j]}]
            jobs.append(Job(msgs + [{"role": "user", "content": conversations[i][k]}]))
        if log is not None:
            log(f"turn {k + 1}: {len(jobs)} questions")
        for i, r in zip(idx, run_jobs(model, tokenizer, chat, jobs, settings, log)):
            answers[i].append(r.answer or "")
    return answers
