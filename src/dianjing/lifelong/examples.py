"""LAMOL's two kinds of training rows, their masks, the batch that holds both, and the QA + λ·LM loss.

For an example with prompt P (context and question), answer A, the answer marker M and its task's
generation token G (plain text, see sequence.Markers), and the tokenizer's BOS (where it adds one)
and EOS:

    QA row   BOS  P M | A EOS              the answer and the end token are targets (the QA loss)
    LM row   BOS  G | P M A EOS            everything after the generation token is a target (the LM loss)

Each part is tokenised on its own and the ids concatenated (`P M` is one part, ` A` another), which
is how generation sees them: the evaluation prompt is `BOS P M`, the pseudo-example prompt `BOS G`.
This is LAMOL's layout (chho33/LAMOL utils.py: `cqa` with `Y`, `gen_X` with `gen_Y`) with text
markers in place of its added tokens `__ans__` and `__gen__` / `__task__`.

The loss of a batch is LAMOL's `mean(QA) + λ·mean(LM)` (utils.get_losses): summed QA loss plus the
summed LM loss scaled by λ·n_QA/n_LM, counted as n_QA targets, which the loop divides by.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dianjing.data.render import Rendered
from dianjing.data.templates import ChatTemplate, tokenizer_adds_bos
from dianjing.errors import ModelError
from dianjing.lifelong.tasks import QAExample
from dianjing.train.loss import FusedLinearCrossEntropy, SFTLoss


@dataclass
class Pair:
    """One training example: its QA row, and its LM row when the LM loss is on."""

    qa: Rendered
    lm: Rendered | None
    task: str

    @property
    def input_ids(self) -> list[int]:  # the longer row drives length-grouped batching
        return self.lm.input_ids if self.lm is not None else self.qa.input_ids


class Layout:
    """Token ids of the rows, the prompts, and the parts of a generated example, for one tokenizer."""

    def __init__(self, tokenizer, answer_marker: str, gen_text):
        if tokenizer.eos_token_id is None:
            raise ModelError("the tokenizer has no end-of-sequence token, which ends every example",
                             fix="use a model whose tokenizer defines eos_token")
        self.tok, self.marker, self.gen_text = tokenizer, answer_marker, gen_text  # gen_text(task) -> str
        self.bos = [tokenizer.bos_token_id] if tokenizer_adds_bos(tokenizer) else []
        self.eos = tokenizer.eos_token_id

    def enc(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def question(self, prompt: str) -> list[int]:
        """`P M`: the prompt and the answer marker."""
        return self.enc(f"{prompt} {self.marker}")

    def answer(self, answer: str) -> list[int]:
        """` A EOS`: the answer (after a space, which the marker's text leaves out) and the end token."""
        return self.enc(f" {answer}") + [self.eos]

    def prompt_ids(self, prompt: str) -> list[int]:
        """What evaluation feeds the model to answer: `BOS P M`."""
        return self.bos + self.question(prompt)

    def gen_prompt(self, task: str) -> list[int]:
        """What starts a pseudo-example of `task`: `BOS G`."""
        return self.bos + self.enc(self.gen_text(task))

    def qa_row(self, ex: QAExample) -> Rendered:
        p, a = self.prompt_ids(ex.prompt), self.answer(ex.answer)
        return Rendered(p + a, [False] * len(p) + [True] * len(a), source=ex.where)

    def lm_row(self, ex: QAExample) -> Rendered:
        g, body = self.gen_prompt(ex.task), self.question(ex.prompt) + self.answer(ex.answer)
        return Rendered(g + body, [False] * len(g) + [True] * len(body), source=ex.where)

    def pair(self, ex: QAExample, lm: bool) -> Pair:
        return Pair(self.qa_row(ex), self.lm_row(ex) if lm else None, ex.task)

    def template(self) -> ChatTemplate:
        """A chat template that renders a user message as `P M` and an answer as ` A EOS`, so `dianjing chat`,
        serve and export take a stage's run folder as they take any chat run."""
        marker = self.marker.replace("'", "\\'")
        source = ("{% if add_bos and bos_token %}{{ bos_token }}{% endif %}{% for m in messages %}"
                  "{% if m.role == 'user' %}{{ m.content }} " + f"{{{{ '{marker}' }}}}"
                  "{% elif m.role == 'assistant' %} {{ m.content }}{{ eos_token }}{% endif %}{% endfor %}")
        return ChatTemplate(name="lifelong", source=source, bos_token=self.tok.bos_token,
                            eos_token=self.tok.eos_token, add_bos=bool(self.bos))


def render(layout: Layout, examples: list[QAExample], lm: bool, max_length: int,
           dropped: dict[str, int]) -> list[Pair]:
    """The pairs of `examples`; an example whose longer row exceeds max_length is dropped and counted."""
    out = []
    for ex in examples:
        p = layout.pair(ex, lm)
        if len(p.input_ids) > max_length or len(p.qa.input_ids) > max_length:
            key = f"{ex.task}: longer than max_length ({max_length} tokens)"
            dropped[key] = dropped.get(key, 0) + 1
            continue
        out.append(p)
    return out


def collate(pairs: list[Pair], pad_id: int) -> dict[str, torch.Tensor]:
    """The QA rows, then the LM rows, right-padded; `lm_rows` says which rows are LM rows."""
    rows = [p.qa for p in pairs] + [p.lm for p in pairs if p.lm is not None]
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids, dtype=torch.long)
        attn[i, :n] = 1
        mask[i, :n] = torch.tensor(r.mask, dtype=torch.bool)
    lm_rows = torch.tensor([False] * len(pairs) + [True] * (len(rows) - len(pairs)), dtype=torch.bool)
    return {"input_ids": ids, "attention_mask": attn, "mask": mask, "lm_rows": lm_rows}


def count_qa_targets(batch: dict) -> int:
    return int((batch["mask"][:, 1:] & ~batch["lm_rows"][:, None]).sum())


class LamolLoss:
    """Callable: batch → (QA loss sum + λ·(n_QA/n_LM)·LM loss sum, n_QA). The sparse output layer
    (train/loss.py) where the model allows it, checked as for chat SFT; else the dense logits."""

    def __init__(self, model, mode: str, lm_lambda: float, log=print):
        self.sft = SFTLoss(model, mode, log=log)  # finds the body, output layer and soft-cap; checks them
        self.model, self.mode, self.lm_lambda = model, self.sft.mode, lm_lambda
        self.head = self.sft.head

    def __call__(self, batch: dict) -> tuple[torch.Tensor, int]:
        ids, tmask = batch["input_ids"], batch["mask"][:, 1:]
        lm_rows = batch["lm_rows"][:, None]
        qa_sel, lm_sel = tmask & ~lm_rows, tmask & lm_rows
        targets = ids[:, 1:]
        n_qa, n_lm = int(qa_sel.sum()), int(lm_sel.sum())
        if self.mode == "sparse":
            h = self.sft.decoder(input_ids=ids, use_cache=False, **self.sft.where(batch)).last_hidden_state[:, :-1]
            w, b = self.head.weight, getattr(self.head, "bias", None)

            def part(sel):
                return FusedLinearCrossEntropy.apply(h[sel], w, b, targets[sel], self.sft.softcap)
        else:
            logits = self.model(input_ids=ids, use_cache=False, **self.sft.where(batch)).logits
            z = logits[:, -ids.shape[1]:][:, :-1]  # prompt tuning prepends virtual tokens

            def part(sel):
                return torch.nn.functional.cross_entropy(z[sel].float(), targets[sel], reduction="sum")
        loss = part(qa_sel)
        if n_lm and self.lm_lambda:
            loss = loss + part(lm_sel) * (self.lm_lambda * n_qa / n_lm)
        return loss, n_qa
