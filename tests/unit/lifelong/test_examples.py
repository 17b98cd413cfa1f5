"""LAMOL's QA and LM rows and their masks, the batch holding both, and the QA + λ·LM loss."""

import pytest
import torch

from dianjing.lifelong.examples import LamolLoss, Layout, collate, count_qa_targets, render
from dianjing.lifelong.tasks import QAExample

EX = QAExample("news", "Stocks fell.\nWhat is this about?", ["Business"], "f.jsonl:1")


@pytest.fixture(scope="module")
def layout(make_tokenizer):
    return Layout(make_tokenizer(), "__ans__", lambda task: f"__{task}__")


def test_bos_is_there_exactly_where_the_tokenizer_puts_one(layout):
    from dianjing.data.templates import tokenizer_adds_bos

    assert layout.bos == ([layout.tok.bos_token_id] if tokenizer_adds_bos(layout.tok) else [])


def test_qa_row_is_prompt_marker_then_supervised_answer_and_end(layout):
    tok = layout.tok
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    row = layout.qa_row(EX)
    prompt = layout.bos + enc("Stocks fell.\nWhat is this about? __ans__")
    answer = enc(" Business") + [tok.eos_token_id]
    assert row.input_ids == prompt + answer
    assert row.mask == [False] * len(prompt) + [True] * len(answer)
    assert layout.prompt_ids(EX.prompt) == prompt  # what evaluation feeds the model is the row's context


def test_lm_row_supervises_everything_after_the_generation_token(layout):
    tok = layout.tok
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    row = layout.lm_row(EX)
    gen = layout.bos + enc("__news__")
    body = enc("Stocks fell.\nWhat is this about? __ans__") + enc(" Business") + [tok.eos_token_id]
    assert row.input_ids == gen + body
    assert row.mask == [False] * len(gen) + [True] * len(body)
    assert layout.gen_prompt("news") == gen  # what a pseudo-example is generated from
    assert tok.decode(body[:-1]) == "Stocks fell.\nWhat is this about? __ans__ Business"


def test_too_long_examples_are_dropped_and_counted(layout):
    dropped = {}
    kept = render(layout, [EX, QAExample("news", "x " * 200, ["y"])], True, 64, dropped)
    assert len(kept) == 1 and dropped == {"news: longer than max_length (64 tokens)": 1}
    assert kept[0].input_ids == kept[0].lm.input_ids and kept[0].qa is not None


def test_the_chat_template_renders_what_evaluation_feeds(layout):
    t = layout.template()
    text = t.render([{"role": "user", "content": EX.prompt}], add_generation_prompt=True)
    assert layout.tok(text, add_special_tokens=False)["input_ids"] == layout.prompt_ids(EX.prompt)
    full = t.render([{"role": "user", "content": EX.prompt}, {"role": "assistant", "content": "Business"}])
    assert layout.tok(full, add_special_tokens=False)["input_ids"] == layout.qa_row(EX).input_ids


def test_collate_puts_qa_rows_first_and_marks_lm_rows(layout):
    pairs = [layout.pair(EX, lm=True), layout.pair(QAExample("news", "Hi?", ["Yes"]), lm=True)]
    b = collate(pairs, pad_id=0)
    assert b["lm_rows"].tolist() == [False, False, True, True]
    assert b["input_ids"][2, :len(pairs[0].lm.input_ids)].tolist() == pairs[0].lm.input_ids
    assert count_qa_targets(b) == sum(sum(p.qa.mask[1:]) for p in pairs)
    qa_only = collate([layout.pair(EX, lm=False)], pad_id=0)
    assert qa_only["lm_rows"].tolist() == [False] and qa_only["input_ids"].shape[0] == 1


def _reference(model, batch, lam):
    """mean(QA) + λ·mean(LM) over the batch's targets, from the model's own logits (LAMOL's get_losses)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
    tm, lm = batch["mask"][:, 1:], batch["lm_rows"][:, None]
    return ce[tm & ~lm].mean() + lam * ce[tm & lm].mean()


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_loss_is_qa_mean_plus_lambda_lm_mean(tiny_llama, layout, mode):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    pairs = [layout.pair(EX, True), layout.pair(QAExample("news", "Hi there?", ["Yes, hello."]), True)]
    batch = collate(pairs, pad_id=layout.tok.pad_token_id)
    loss = LamolLoss(model, mode, 0.25, log=lambda *_: None)
    assert loss.mode == mode
    total, n = loss(batch)
    assert n == count_qa_targets(batch)
    torch.testing.assert_close(total / n, _reference(model, batch, 0.25), rtol=1e-4, atol=1e-5)
    # λ = 0 (sequential, replay, multitask): the QA loss alone
    qa_total, _ = LamolLoss(model, mode, 0.0, log=lambda *_: None)(batch)
    torch.testing.assert_close(qa_total / n, _reference(model, batch, 0.0), rtol=1e-4, atol=1e-5)
