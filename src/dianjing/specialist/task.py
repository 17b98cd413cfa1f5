"""The specialist route: what the one training loop needs for classify / pair / tag / extract-qa,
and the prediction and scoring that `dianjing predict` and `dianjing eval` use.

Data flows as on the generative route: files → examples (data.specialist_readers, every
rejection counted) → features (specialist.encode) → batches → backbone + head
(specialist.model) → `build`'s Setup → the one training loop → run folder → predictions →
metrics (eval.metrics).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from dianjing.config import RunConfig
from dianjing.data.load import split_eval
from dianjing.errors import DianjingError
from dianjing.precision import Precision, for_training, from_name, to_device
from dianjing.data import specialist_readers as sd
from dianjing.eval import metrics as sm
from dianjing.models import heads
from dianjing.specialist import model as smodel
from dianjing.specialist.encode import IGNORE, Encoder, EncodeStats, Feature

QA_TOP_K = 20


def read_examples(cfg: RunConfig, paths: list[str], require_labels: bool = True, log=print):
    t = cfg.task
    exs, report = sd.read_task(paths, t.type, text_field=t.text_field, text_b_field=t.text_b_field,
                               label_field=t.label_field, require_labels=require_labels,
                               on_error=cfg.data.on_error)
    for line in report.lines():
        log(line)
    return exs, report


class Head:
    """Tokenizer + framing + model + labels of one specialist; no data of its own."""

    def __init__(self, task: str, tokenizer, model, labels: list[str], max_length: int, tcfg,
                 precision: Precision):
        self.task, self.tok, self.model, self.labels, self.tcfg = task, tokenizer, model, labels, tcfg
        self.precision = precision  # bf16 compute over fp32 heads (and fp32 weights in full fine-tuning)
        self.label_ids = {l: i for i, l in enumerate(labels)}
        types = getattr(model.config, "type_vocab_size", 0) or 0
        self.encoder = Encoder(tokenizer, max_length, use_token_types=types > 1)

    # -- examples → features → batches ---------------------------------------------
    def encode(self, examples, training: bool, stats: EncodeStats | None = None) -> list[Feature]:
        stats = stats if stats is not None else EncodeStats()
        if self.task in ("classify", "pair"):
            return self.encoder.encode_text(examples, self.label_ids if training or _labelled(examples) else None,
                                            stats)
        if self.task == "tag":
            return self.encoder.encode_tags(examples, self.label_ids if _labelled(examples) else None, stats)
        return self.encoder.encode_qa(examples, self.tcfg.doc_stride, stats, training)

    def collate(self, feats: list[Feature]) -> dict:
        width = max(len(f.input_ids) for f in feats)
        n = len(feats)
        pad = self.tok.pad_token_id
        ids = torch.full((n, width), pad, dtype=torch.long)
        attn = torch.zeros((n, width), dtype=torch.long)
        batch = {"input_ids": ids, "attention_mask": attn}
        if feats[0].token_type_ids is not None:
            batch["token_type_ids"] = torch.zeros((n, width), dtype=torch.long)
        if self.task == "tag":
            batch["labels"] = torch.full((n, width), IGNORE, dtype=torch.long)
        for r, f in enumerate(feats):
            L = len(f.input_ids)
            ids[r, :L] = torch.tensor(f.input_ids)
            attn[r, :L] = 1
            if "token_type_ids" in batch:
                batch["token_type_ids"][r, :L] = torch.tensor(f.token_type_ids)
            if self.task == "tag" and f.labels is not None:
                batch["labels"][r, :L] = torch.tensor(f.labels)
        if self.task in ("classify", "pair") and feats[0].label is not None:
            batch["labels"] = torch.tensor([f.label for f in feats])
        if self.task == "extract-qa":
            batch["start"] = torch.tensor([f.start or 0 for f in feats])
            batch["end"] = torch.tensor([f.end or 0 for f in feats])
        return batch

    # -- training objective --------------------------------------------------------
    def loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        """Summed loss and the number of targets it sums over (the loop divides)."""
        with self.precision.autocast():
            logits = heads.head_logits(self.model, batch).float()
        if self.task in ("classify", "pair"):
            return F.cross_entropy(logits, batch["labels"], reduction="sum"), logits.shape[0]
        if self.task == "tag":
            labels = batch["labels"]
            n = int((labels != IGNORE).sum())
            return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum"), n
        # positions beyond a row's length can never be an answer
        m = batch["attention_mask"].bool().unsqueeze(-1)
        logits = logits.masked_fill(~m, -1e4)
        ls = F.cross_entropy(logits[..., 0], batch["start"], reduction="sum")
        le = F.cross_entropy(logits[..., 1], batch["end"], reduction="sum")
        return (ls + le) / 2, logits.shape[0]

    def count_targets(self, batch: dict) -> int:
        if self.task == "tag":
            return int((batch["labels"] != IGNORE).sum())
        return int(batch["input_ids"].shape[0])

    # -- prediction ----------------------------------------------------------------
    @torch.no_grad()
    def logits_of(self, feats: list[Feature], batch_size: int) -> list[torch.Tensor]:
        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(feats)), key=lambda i: len(feats[i].input_ids))  # little padding
        by_index: dict[int, torch.Tensor] = {}
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            batch = to_device(self.collate([feats[i] for i in idx]), self.precision.device)
            with self.precision.autocast():
                lg = heads.head_logits(self.model, batch).float().cpu()
            for r, i in enumerate(idx):
                by_index[i] = lg[r, : len(feats[i].input_ids)] if lg.dim() > 2 else lg[r]
        out = [by_index[i] for i in range(len(feats))]
        self.model.train(was_training)
        return out

    def predict(self, examples, batch_size: int = 16) -> list[dict]:
        stats = EncodeStats()
        feats = self.encode(examples, training=False, stats=stats)
        logits = self.logits_of(feats, batch_size)
        if self.task in ("classify", "pair"):
            preds = []
            for lg in logits:
                p = torch.softmax(lg, -1)
                k = int(p.argmax())
                preds.append({"label": self.labels[k], "score": round(float(p[k]), 6),
                              "scores": {l: round(float(p[i]), 6) for i, l in enumerate(self.labels)}})
            return preds
        if self.task == "tag":
            preds = []
            for ex, f, lg in zip(examples, feats, logits):
                tags = ["O"] * len(ex.tokens)
                best = lg.argmax(-1)
                for pos, w in enumerate(f.word_index):
                    if w >= 0:
                        tags[w] = self.labels[int(best[pos])]
                preds.append({"tokens": ex.tokens, "tags": _repair_bio(tags)})
            return preds
        return self._qa_answers(examples, feats, logits)

    def _qa_answers(self, examples, feats, logits) -> list[dict]:
        best: dict[int, tuple[float, int, int]] = {}
        max_len = self.tcfg.max_answer_length
        for f, lg in zip(feats, logits):
            ctx = [i for i, o in enumerate(f.offsets) if o is not None]
            if not ctx:
                continue
            lo, hi = ctx[0], ctx[-1]
            s_log, e_log = lg[:, 0], lg[:, 1]
            k = min(QA_TOP_K, hi - lo + 1)
            s_top = torch.topk(s_log[lo:hi + 1], k).indices + lo
            e_top = torch.topk(e_log[lo:hi + 1], k).indices + lo
            for s in s_top.tolist():
                for e in e_top.tolist():
                    if e < s or e - s + 1 > max_len:
                        continue
                    score = float(s_log[s] + e_log[e])
                    if f.example not in best or score > best[f.example][0]:
                        best[f.example] = (score, f.offsets[s][0], f.offsets[e][1])
        out = []
        for i, ex in enumerate(examples):
            if i not in best:
                out.append({"id": ex.id, "answer": "", "start": -1, "score": None})
                continue
            score, c0, c1 = best[i]
            text = ex.context[c0:c1]
            stripped = text.strip()
            c0 += len(text) - len(text.lstrip())
            out.append({"id": ex.id, "answer": stripped, "start": c0, "score": round(score, 4)})
        return out

    # -- scoring -------------------------------------------------------------------
    def score(self, examples, preds: list[dict]) -> dict:
        if self.task in ("classify", "pair"):
            gold = [e.label for e in examples]
            pred = [p["label"] for p in preds]
            return {"accuracy": sm.accuracy(pred, gold), "macro_f1": sm.macro_f1(pred, gold, self.labels),
                    "count": len(gold)}
        if self.task == "tag":
            r = sm.entity_prf([p["tags"] for p in preds], [e.tags for e in examples])
            r["token_accuracy"] = sm.accuracy([t for p in preds for t in p["tags"]],
                                              [t for e in examples for t in e.tags])
            r["count"] = len(examples)
            return r
        refs = {e.id: [a for a, _ in e.answers] for e in examples}
        return sm.squad_scores({p["id"]: p["answer"] for p in preds}, refs)

    def info(self, cfg: RunConfig, base_model: str, dtype: str) -> dict:
        return {"task": cfg.task.model_dump(mode="json"), "adapter": cfg.adapter.model_dump(mode="json"),
                "base_model": base_model, "model_name": cfg.model.name, "labels": self.labels,
                "max_length": cfg.data.max_length, "head": getattr(self.model, "dianjing_head", "?"),
                "pad_token_id": self.tok.pad_token_id, "encoder_style": self.encoder.encoder_style,
                "dtype": dtype, "random_init": bool(getattr(cfg.model, "random_init", False))}


def _labelled(examples) -> bool:
    if not examples:
        return False
    e = examples[0]
    return getattr(e, "label", None) is not None or getattr(e, "tags", None) is not None


def _repair_bio(tags: list[str]) -> list[str]:
    """Predicted tags follow BIO: an I-X that cannot continue an entity becomes B-X."""
    out, prev = [], "O"
    for t in tags:
        if t.startswith("I-") and (prev == "O" or prev[2:] != t[2:]):
            t = "B-" + t[2:]
        out.append(t)
        prev = t
    return out


def main_metric(task: str) -> str:
    return {"classify": "accuracy", "pair": "accuracy", "tag": "f1", "extract-qa": "f1"}[task]


def _plain_files(cfg: RunConfig) -> None:
    """Specialists read files by path with their own field detection (task.text_field …): refuse the
    chat route's entry options rather than ignore them."""
    from dianjing.errors import ConfigError

    if cfg.data.preference:
        raise ConfigError("data.preference is for chat fine-tuning; specialists read labelled examples",
                          fix="remove data.preference")
    for key, files in (("data.files", cfg.data.files), ("data.eval_files", cfg.data.eval_files)):
        for i, f in enumerate(files):
            used = [k for k in ("hub", "catalogue", "columns", "roles") if getattr(f, k, None)]
            if used:
                raise ConfigError(f"{key}[{i}]: {', '.join(used)} {'is' if len(used) == 1 else 'are'} not read by "
                                  f"specialists yet (task.type {cfg.task.type})",
                                  fix="give a local file as path, and name its fields with task.text_field, "
                                      "task.text_b_field and task.label_field")


class SpecialistData:
    """Training and held-out examples and features for a run, and the labels they define."""

    def __init__(self, cfg: RunConfig, log=print):
        self.cfg = cfg
        task = cfg.task.type
        _plain_files(cfg)
        train_ex, self.report = read_examples(cfg, [f.path for f in cfg.data.files], log=log)
        if cfg.data.max_examples:
            train_ex = train_ex[: cfg.data.max_examples]
        if cfg.data.eval_files:
            eval_ex, self.eval_report = read_examples(cfg, [f.path for f in cfg.data.eval_files], log=log)
        else:
            train_ex, eval_ex = split_eval(train_ex, cfg.data.eval_fraction, cfg.train.seed)
            self.eval_report = None
        if not train_ex:
            raise DianjingError("no training example left after reading", fix="check data.files and the report above")
        if task in ("classify", "pair", "tag"):
            self.labels = sd.label_list(train_ex)
            if len(self.labels) < 2 and task != "tag":
                raise DianjingError(f"the training data has only {len(self.labels)} label(s): {self.labels}",
                                    fix="a classifier needs at least two classes")
            rep = self.eval_report or self.report
            if task == "tag":
                eval_ex = sd.check_tags(eval_ex, set(self.labels), rep, cfg.data.on_error)
            else:
                eval_ex = sd.check_labels(eval_ex, self.labels, rep, cfg.data.on_error)
        else:
            self.labels = []
        self.train_examples, self.eval_examples = train_ex, eval_ex


def setup(cfg: RunConfig, model_path: str, tokenizer, prec: Precision, log=print, random_init: bool = False):
    """Data, model and head for a specialist run (used by the training loop)."""
    data = SpecialistData(cfg, log=log)
    enc_probe = Encoder(tokenizer, cfg.data.max_length, False)
    # frozen weights may live in bf16; trained ones keep fp32 masters and bf16 compute comes from autocast
    load_dtype = prec.load_dtype(trains_base=cfg.adapter.method == "full")
    model, kind = smodel.build(model_path, cfg.task.type, max(2, len(data.labels)), cfg.task, cfg.adapter, load_dtype,
                               tokenizer.pad_token_id, enc_probe.encoder_style, cfg.model.trust_remote_code,
                               log=log, random_init=random_init)
    head = Head(cfg.task.type, tokenizer, model, data.labels, cfg.data.max_length, cfg.task, prec)
    stats = EncodeStats()
    train_feats = head.encode(data.train_examples, training=True, stats=stats)
    eval_feats = head.encode(data.eval_examples, training=True) if data.eval_examples else []
    log(f"task {cfg.task.type}: {len(data.train_examples)} training examples → {len(train_feats)} inputs, "
        f"{len(data.eval_examples)} held out; {len(data.labels)} labels; head: {kind}"
        + (f"; truncated {stats.truncated}" if stats.truncated else "")
        + (f"; {stats.words_cut} words cut by data.max_length" if stats.words_cut else "")
        + (f"; {stats.answers_outside} answers in no window (trained as 'no answer here')"
           if stats.answers_outside else ""))
    return data, head, train_feats, eval_feats, stats


# -- run folders -----------------------------------------------------------------------
def load_head(run_dir: Path, log=print, command: str = "dianjing eval", device: str = "auto") -> tuple[Head, dict]:
    from dianjing.models.load import load_tokenizer
    from dianjing.run_folder import SPECIALIST, RunFolder

    run = RunFolder(run_dir)
    run.require(SPECIALIST, command=command)  # a chat run or an unfinished one: say which command fits
    spec = run.specialist
    info_path = spec / "specialist.json"
    if not info_path.exists():
        raise DianjingError(f"{run_dir} holds no specialist model (no specialist/specialist.json)",
                            fix="the run folder is damaged; train it again")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    tok = load_tokenizer(str(run.tokenizer), log=log)
    # compute as the run trained: its dtype for the frozen body, fp32 for the head and trained weights
    full = info["adapter"]["method"] == "full"
    prec = for_training("bf16" if from_name(info.get("dtype", "float32")) == torch.bfloat16 else "fp32",
                        full=full, fp32_head=True, device_setting=device)
    model = smodel.load(spec, info, prec.load_dtype(trains_base=full), log=log).to(prec.device)
    from dianjing.config import TaskConfig

    head = Head(info["task"]["type"], tok, model, info["labels"], info["max_length"], TaskConfig(**info["task"]),
                prec)
    return head, info



# -- the route's builder (see dianjing.train.setup) ---------------------------------------
def build(ctx):
    """A specialist run for the one training loop: data, backbone + head, its loss and metrics."""
    from dianjing.models.adapters import count_params
    from dianjing.train.setup import Setup, base_summary, trainable

    cfg, log = ctx.cfg, ctx.log
    if cfg.train.batching == "packed":
        from dianjing.errors import ConfigError

        raise ConfigError("train.batching: packed is for chat fine-tuning; a specialist's head reads one "
                          "example per row", fix="use train.batching: length_grouped")
    data, head, train_feats, eval_feats, _ = setup(cfg, ctx.model_path, ctx.tokenizer, ctx.precision, log=log,
                                                   random_init=cfg.model.random_init)
    model = head.model.to(ctx.precision.device)
    if cfg.model.gradient_checkpointing:
        body = model.backbone if hasattr(model, "backbone") else model
        if hasattr(body, "gradient_checkpointing_enable") or hasattr(body, "activation_checkpointing_enable"):
            from dianjing.models.load import enable_checkpointing

            if unchecked := enable_checkpointing(body, cfg.model.unchecked_blocks):
                log(f"gradient checkpointing: on, except in the last {unchecked} blocks (model.unchecked_blocks)")
    if cfg.model.activation_budget is not None:
        from dianjing.train.compile import budget_unused

        log(budget_unused("a specialist's blocks are not compiled", cfg.model.gradient_checkpointing))
    model.train()
    n_trainable, total = count_params(model)
    dtype = str(ctx.precision.dtype).split(".")[-1]
    log(f"model: {ctx.model_path} ({total / 1e6:.1f}M parameters, {dtype}), "
        f"{cfg.adapter.method}: {n_trainable / 1e6:.2f}M trainable ({100 * n_trainable / total:.2f}%)")
    groups = trainable(model)
    if cfg.task.head_lr:  # a new head may want a larger step than the body
        ids = heads.head_parameter_ids(model)
        params = groups[0]["params"]
        groups = [g for g in ({"params": [p for p in params if id(p) not in ids]},
                              {"params": [p for p in params if id(p) in ids], "lr": cfg.task.head_lr}) if g["params"]]

    def eval_scores() -> dict:
        if not data.eval_examples:
            return {}
        r = head.score(data.eval_examples, head.predict(data.eval_examples, cfg.train.batch_size))
        return {k: float(v) for k, v in r.items()
                if isinstance(v, (int, float)) and k not in ("count", "support", "missing", "extra")}

    def save(run, state_dict: dict | None = None) -> None:  # never sharded: see train.distributed.choose
        smodel.save(model, run.specialist, head.info(cfg, ctx.model_path, dtype))
        ctx.tokenizer.save_pretrained(str(run.tokenizer))

    def summarize(state: dict) -> dict:
        return {"task": cfg.task.type, "examples": len(data.train_examples),
                **base_summary(state, 6 * total * state["tokens"]),
                "final_eval": state.get("eval_scores"), "labels": data.labels, "data": data.report.summary(),
                "eval_data": data.eval_report.summary() if data.eval_report else None}

    return Setup(model=model, param_groups=groups, train_set=train_feats, eval_set=eval_feats, collate=head.collate,
                 loss=head.loss, count_targets=head.count_targets, flops_per_token=6 * total, flops_per_target=0,
                 save=save, summarize=summarize, eval_scores=eval_scores,
                 info={"base_model": ctx.model_path, "model_name": cfg.model.name, "task": cfg.task.type,
                       "method": cfg.adapter.method, "dtype": dtype})
