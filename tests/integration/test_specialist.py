"""Specialist route end to end on tiny random models: train → run folder → predict / eval."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from dianjing.cli import main
from dianjing.precision import for_inference
from dianjing.train.loop import train
from tests.helpers import logged_losses, specialist_config
from tests.tiny import build_bert, build_model

GOOD = ["good", "great", "good film", "great movie", "good plot", "great film good"]
BAD = ["bad", "awful", "bad film", "awful movie", "bad plot", "awful film bad"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def tiny_llama_m(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def tiny_gemma_m(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("gemma"), kind="gemma3")


def _sentiment(path, n=48, seed=0):
    rng = random.Random(seed)
    rows = ["text,label"]
    for i in range(n):
        pos = i % 2 == 0
        rows.append(f"{rng.choice(GOOD if pos else BAD)} {rng.choice(['paris', 'london', ''])},{'pos' if pos else 'neg'}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_classify_full_learns_and_eval_predict(tiny_bert, tmp_path, capsys):
    train_f = _sentiment(tmp_path / "train.csv", 64)
    eval_f = _sentiment(tmp_path / "test.csv", 24, seed=1)
    out = tmp_path / "run"
    cfg = specialist_config(tiny_bert, train_f, out, "classify", "adapter.method=full", "train.lr=3e-3",
                            "train.epochs=6", eval_data=eval_f)
    run_dir, summary = train(cfg, log=lambda *_: None)
    losses = logged_losses(run_dir)
    assert losses[-1] < 0.5 * losses[0]
    assert summary["final_eval"]["accuracy"] == 1.0
    assert summary["labels"] == ["neg", "pos"]
    info = json.loads((run_dir / "specialist" / "specialist.json").read_text())
    assert info["head"] == "transformers"  # BERT has AutoModelForSequenceClassification

    assert main(["eval", str(run_dir), "--data", str(eval_f)]) == 0
    saved = json.loads((run_dir / "eval" / "test.json").read_text())
    assert saved["scores"]["accuracy"] == 1.0 and saved["scores"]["count"] == 24

    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"text": "great film"}) + "\n" + json.dumps({"text": "awful plot"}) + "\n")
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(new)]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [l["label"] for l in lines] == ["pos", "neg"]
    assert all(0.5 < l["score"] <= 1 and abs(sum(l["scores"].values()) - 1) < 1e-4 for l in lines)


def test_lora_trains_only_adapter_and_head(tiny_bert, tmp_path):
    from transformers import AutoModel

    train_f = _sentiment(tmp_path / "train.csv", 32)
    cfg = specialist_config(tiny_bert, train_f, tmp_path / "run", "classify", "adapter.method=lora", "adapter.r=4",
                            "train.max_steps=4", "train.lr=1e-2", "data.eval_fraction=0.25")
    run_dir, _ = train(cfg, log=lambda *_: None)
    saved = load_file(str(run_dir / "specialist" / "weights.safetensors"))
    assert saved and all("lora_" in k or k.startswith("classifier.") for k in saved), sorted(saved)
    assert any(k.startswith("classifier.") for k in saved) and any("lora_B" in k for k in saved)
    assert any(float(v.abs().sum()) > 0 for k, v in saved.items() if "lora_B" in k)  # the adapter moved
    # the frozen body is unchanged: the rebuilt model's base weights equal the base folder's
    from dianjing.specialist.task import load_head

    head, _ = load_head(run_dir, log=lambda *_: None)
    base = AutoModel.from_pretrained(str(tiny_bert))
    got = {k.replace("bert.", "", 1).replace(".base_layer", ""): v for k, v in head.model.state_dict().items()
           if k.startswith("bert.") and "lora_" not in k}
    for k, v in base.state_dict().items():
        if k in got:
            assert torch.equal(got[k], v.to(got[k].dtype)), k  # frozen weights may live in bf16


def test_pair_reads_the_second_text(tiny_bert, tmp_path):
    """The label depends on sentence2 only: if the second text did not reach the model, accuracy would be 1/2."""
    rows = []
    for i in range(64):
        rng = random.Random(i)
        b = rng.choice(["paris", "london"])
        rows.append(json.dumps({"sentence1": rng.choice(GOOD + BAD), "sentence2": b + " film",
                                "label": "fr" if b == "paris" else "uk"}))
    f = tmp_path / "pairs.jsonl"
    f.write_text("\n".join(rows) + "\n")
    cfg = specialist_config(tiny_bert, f, tmp_path / "run", "pair", "adapter.method=full", "train.lr=3e-3",
                            "train.epochs=8", "data.eval_fraction=0.25")
    run_dir, summary = train(cfg, log=lambda *_: None)
    assert summary["final_eval"]["accuracy"] == 1.0
    from dianjing.data.specialist_readers import TextExample
    from dianjing.specialist.task import load_head

    head, _ = load_head(run_dir, log=lambda *_: None)
    f0 = head.encode([TextExample(where="x", text="good film", text_b="paris film")], training=False)[0]
    assert f0.token_type_ids is not None and f0.token_type_ids.count(1) == len(head.encoder.ids("paris film")) + 1
    assert [p["label"] for p in head.predict([TextExample("x", "bad", "paris film"),
                                              TextExample("y", "good", "london film")])] == ["fr", "uk"]


def _tag_file(path, n=40):
    names = ["paris", "london"]
    lines = []
    for i in range(n):
        rng = random.Random(i)
        city = rng.choice(names)
        words = ["the", "film", "in", city, "is", rng.choice(["good", "bad"])]
        tags = ["O", "O", "O", "B-loc", "O", "O"]
        if i % 3 == 0:
            words += ["great", "movie"]
            tags += ["B-work", "I-work"]
        lines += [f"{w}\t{t}" for w, t in zip(words, tags)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("which,head", [("bert", "transformers"), ("gemma", "own")])
def test_tag_learns_entities(which, head, tiny_bert, tiny_gemma_m, tmp_path):
    model = tiny_bert if which == "bert" else tiny_gemma_m
    f = _tag_file(tmp_path / "train.conll")
    cfg = specialist_config(model, f, tmp_path / "run", "tag", "adapter.method=full", "train.lr=3e-3",
                            "train.epochs=20", "data.eval_fraction=0.2")
    run_dir, summary = train(cfg, log=lambda *_: None)
    info = json.loads((run_dir / "specialist" / "specialist.json").read_text())
    assert info["head"] == head
    assert info["labels"][0] == "O" and set(info["labels"]) == {"O", "B-loc", "I-loc", "B-work", "I-work"}
    losses = logged_losses(run_dir)
    assert losses[-1] < 0.3 * losses[0]
    assert summary["final_eval"]["f1"] > 0.9
    assert main(["eval", str(run_dir), "--data", str(f)]) == 0
    scores = json.loads((run_dir / "eval" / "train.json").read_text())["scores"]
    assert scores["f1"] > 0.9 and "loc" in scores["per_type"]


def test_decoder_classify_with_own_head(tiny_llama_m, tmp_path):
    f = _sentiment(tmp_path / "train.csv", 48)
    cfg = specialist_config(tiny_llama_m, f, tmp_path / "run", "classify", "adapter.method=lora", "task.head=own",
                            "train.lr=1e-2", "train.epochs=6", "data.eval_fraction=0.25")
    run_dir, summary = train(cfg, log=lambda *_: None)
    info = json.loads((run_dir / "specialist" / "specialist.json").read_text())
    assert info["head"] == "own" and info["task"]["pooling"] == "auto" and not info["encoder_style"]
    losses = logged_losses(run_dir)
    assert losses[-1] < losses[0]


def _qa_records(n=30):
    recs = []
    for i in range(n):
        rng = random.Random(i)
        city = rng.choice(["paris", "london"])
        filler = " ".join(rng.choice(["the", "film", "good", "movie", "plot"]) for _ in range(rng.randint(5, 40)))
        context = f"{filler} the capital is {city} . {filler}"
        recs.append({"id": f"q{i}", "question": "what is the capital ?", "context": context,
                     "answers": {"text": [city], "answer_start": [context.index(f"is {city}") + 3]}})
    return recs


def test_extract_qa_windows_map_back_exactly(tiny_bert, tiny_gemma_m, tmp_path):
    """With logits set to the labelled span, every answer decoded from its window equals the gold text."""
    from dianjing.config import TaskConfig
    from dianjing.models.load import load_tokenizer
    from dianjing.data.specialist_readers import QAExample
    from dianjing.specialist.task import Head

    for model in (tiny_bert, tiny_gemma_m):
        tok = load_tokenizer(str(model), log=lambda *_: None)
        exs = [QAExample(where=f"x:{i}", id=r["id"], question=r["question"], context=r["context"],
                         answers=[(r["answers"]["text"][0], r["answers"]["answer_start"][0])])
               for i, r in enumerate(_qa_records())]
        dummy = type("M", (), {"config": type("C", (), {"type_vocab_size": 2})()})()
        head = Head("extract-qa", tok, dummy, [], 32, TaskConfig(type="extract-qa", doc_stride=8),
                    for_inference("fp32"))
        feats = head.encode(exs, training=True)
        assert len(feats) > len(exs)  # long contexts were split into windows
        assert all(len(f.input_ids) <= 32 for f in feats)
        logits = []
        for f in feats:
            lg = torch.full((len(f.input_ids), 2), -5.0)
            if f.start:
                lg[f.start, 0] = lg[f.end, 1] = 5.0
            logits.append(lg)
        preds = head._qa_answers(exs, feats, logits)
        assert [p["answer"] for p in preds] == [e.answers[0][0] for e in exs]
        assert all(e.context[p["start"]:p["start"] + len(p["answer"])] == p["answer"] for p, e in zip(preds, exs))


def test_extract_qa_trains_end_to_end(tiny_bert, tmp_path):
    f = tmp_path / "squad.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in _qa_records(40)) + "\n")
    cfg = specialist_config(tiny_bert, f, tmp_path / "run", "extract-qa", "adapter.method=full", "train.lr=3e-3",
                            "train.epochs=6", "data.eval_fraction=0.25", "data.max_length=48", "task.doc_stride=16")
    run_dir, summary = train(cfg, log=lambda *_: None)
    losses = logged_losses(run_dir)
    assert losses[-1] < losses[0]
    assert {"exact_match", "f1"} <= set(summary["final_eval"])
    assert main(["eval", str(run_dir), "--data", str(f)]) == 0
    scores = json.loads((run_dir / "eval" / "squad.json").read_text())["scores"]
    assert scores["count"] == 40 and 0 <= scores["exact_match"] <= 100


def test_random_init_baseline_is_not_the_pretrained_model(tiny_bert, tmp_path):
    f = _sentiment(tmp_path / "train.csv", 16)
    cfg = specialist_config(tiny_bert, f, tmp_path / "run", "classify", "adapter.method=lora",
                            "model.random_init=true", "train.max_steps=1", "data.eval_fraction=0.25")
    run_dir, _ = train(cfg, log=lambda *_: None)
    saved = load_file(str(run_dir / "specialist" / "weights.safetensors"))
    from transformers import AutoModel

    base = AutoModel.from_pretrained(str(tiny_bert)).state_dict()
    emb = saved["bert.embeddings.word_embeddings.weight"]
    assert not torch.equal(emb, base["embeddings.word_embeddings.weight"])
    from dianjing.specialist.task import load_head

    head, _ = load_head(run_dir, log=lambda *_: None)  # the random body comes back from the run folder
    assert torch.equal(head.model.bert.embeddings.word_embeddings.weight, emb)


def test_unseen_eval_label_is_reported(tiny_bert, tmp_path):
    train_f = _sentiment(tmp_path / "train.csv", 16)
    bad = tmp_path / "test.csv"
    bad.write_text("text,label\ngood film,pos\nmeh film,neutral\n")
    cfg = specialist_config(tiny_bert, train_f, tmp_path / "run", "classify", "train.max_steps=1", eval_data=bad)
    from dianjing.errors import DataError

    with pytest.raises(DataError, match=r"test.csv:3.*neutral"):
        train(cfg, log=lambda *_: None)
    cfg2 = specialist_config(tiny_bert, train_f, tmp_path / "run2", "classify", "train.max_steps=1",
                             "data.on_error=skip", eval_data=bad)
    _, summary = train(cfg2, log=lambda *_: None)
    assert summary["eval_data"]["rejected"]


def test_cli_train_task_and_eval_data(tiny_bert, tmp_path, capsys):
    train_f = _sentiment(tmp_path / "train.csv", 16)
    eval_f = _sentiment(tmp_path / "dev.csv", 8, seed=3)
    out = tmp_path / "run"
    rc = main(["train", "--task", "classify", "--model", str(tiny_bert), "--data", str(train_f),
               "--eval-data", str(eval_f), "--output-dir", str(out), "--set", "train.max_steps=2",
               "--set", "train.threads=1", "--set", "model.gradient_checkpointing=false"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "16 training examples" in err and "8 held out" in err and "held-out: accuracy" in err
    assert "dianjing predict" in err and "dianjing chat" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "classify" and summary["examples"] == 16


def test_default_specialist_run_pins_full_fine_tuning_in_config_yaml(tiny_bert, tmp_path):
    """No adapter.method given: auto resolves to full on the tiny backbone, and config.yaml says so (with
    full fine-tuning's lr), so a resumed run and a reader see what was trained."""
    import yaml

    train_f = _sentiment(tmp_path / "train.csv", 32)
    cfg = specialist_config(tiny_bert, train_f, tmp_path / "run", "classify", "train.max_steps=2")
    said = []
    run_dir, _ = train(cfg, log=said.append)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["adapter"]["method"] == "full" and saved["train"]["lr"] == 1e-4
    assert any("adapter.method auto: full fine-tuning" in s for s in said)
    info = json.loads((run_dir / "specialist" / "specialist.json").read_text())
    assert info["adapter"]["method"] == "full"
    weights = load_file(str(run_dir / "specialist" / "weights.safetensors"))
    assert any(k.startswith("bert.") for k in weights)  # the body trained and was saved, not only a head
