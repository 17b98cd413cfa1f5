"""dianjing validate: check a config or a data file and show what training would see.

Instruction data (task.type sft) is rendered with the chat template and counted in tokens;
specialist data (classify, pair, tag, extract-qa) is read by the specialist readers, split and
checked exactly as `dianjing train` would, and counted in examples and labels.
"""

from __future__ import annotations

from collections import Counter

from dianjing.cli.common import add_config_options, config_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="check a config or data file; show rendered examples and counts",
                       description="Render a few examples with the supervised tokens marked, and count "
                                   "tokens, supervised tokens, truncated and dropped examples. With --task "
                                   "classify | pair | tag | extract-qa: read the data as that task's training "
                                   "would, show a few examples, and count examples, held-out examples, labels "
                                   "and every rejected or repaired record.")
    add_config_options(p)
    p.add_argument("--show", type=int, default=3, help="how many examples to print (default 3)")
    p.add_argument("--no-color", action="store_true", help="mark supervised tokens with [[…]] instead of colour")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    cfg = config_from_args(args)
    console = Console(highlight=False, no_color=args.no_color)
    if cfg.task.type == "lifelong":
        from dianjing.errors import ConfigError

        raise ConfigError("task.type lifelong is one stage of a continual run, which has no data of its own",
                          fix="`dianjing train --continual SEQUENCE.yaml` checks every task's data before it trains")
    if cfg.task.type != "sft":  # --task, or task.type in the config
        return run_specialist(cfg, console, args.show)
    return run_sft(cfg, console, args)


def run_sft(cfg, console, args) -> int:
    """Instruction data: render a few examples with the template and count tokens and drops."""
    from dianjing.cli import log
    from dianjing.data.diagnose import diagnose
    from dianjing.data.load import load_conversations
    from dianjing.data.render import RenderStats, render_all, show
    from dianjing.data.templates import choose_template
    from dianjing.models.load import load_tokenizer, resolve_model

    convs, report = load_conversations(cfg.data, log=log)  # before the model, which may take minutes to fetch
    path = resolve_model(cfg.model.name, log=log)
    tok = load_tokenizer(path, cfg.model.trust_remote_code, log=log)
    template, why = choose_template(cfg.data.template, tok, cfg.data.template_kwargs)
    log(why)
    behaviour = diagnose(template, cfg.data.loss_on, cfg.data.reasoning, cfg.data.system_prompt)
    console.rule("the chat template")
    console.print(behaviour.text(), markup=False, soft_wrap=True)
    console.print(f"  a synthetic conversation with reasoning in every answer, as it is trained with "
                  f"data.reasoning={cfg.data.reasoning} ([[…]]: supervised):", markup=False, soft_wrap=True)
    console.print(behaviour.marked(), markup=False, soft_wrap=True)
    tools = tool_counts(convs)
    if tools:
        from dianjing.data.tools import describe_tool_format

        log(describe_tool_format(template))
    stats = RenderStats()
    rendered = render_all(convs, tok, template, cfg.data.max_length, cfg.data.loss_on, stats, cfg.data.reasoning)
    for r in pick_examples(rendered, convs, args.show):
        console.rule(f"{r.source}  ({len(r.input_ids)} tokens, {r.n_supervised} supervised"
                     + (", truncated" if r.truncated else "") + ")")
        if args.no_color:
            console.print(show(r, tok, color=False), markup=False)
        else:
            console.print(show(r, tok, color=True))
    console.rule("summary")
    for f in report.files:
        console.print(f"{f['path']}: format {f['format']}{' (detected)' if f['detected'] else ''}, "
                      f"{f['records']} records, {f['kept']} read", markup=False)
    s = stats.summary()
    console.print(f"examples {s['examples']}, kept {s['kept']}, truncated {s['truncated']} "
                  f"(max_length {cfg.data.max_length}), tokens {s['tokens']}, "
                  f"supervised tokens {s['supervised_tokens']}", markup=False)
    if tools:
        console.print(f"tool calls {tools['calls']} in {tools['calling']} conversations, tool results "
                      f"{tools['results']}, conversations with a tool list {tools['listed']}", markup=False)
    for why_, n in stats.dropped.items():
        console.print(f"dropped {n}: {why_}", markup=False)
    for why_, n in stats.not_trained.items():
        console.print(f"not trained, in {n} turns: {why_}", markup=False)
    for why_, n in report.skipped.items():
        console.print(f"skipped {n} records: {why_}", markup=False)
    for e in report.first_errors:
        console.print(f"  e.g. {e}", markup=False)
    return 0


def tool_counts(convs) -> dict:
    """Tool calls, results and tool lists in the data; empty when it has none."""
    calls = [sum(len(m.tool_calls) for m in c.messages) for c in convs]
    counts = {"calls": sum(calls), "calling": sum(1 for n in calls if n),
              "results": sum(1 for c in convs for m in c.messages if m.role == "tool"),
              "listed": sum(1 for c in convs if c.tools)}
    return counts if any(counts.values()) else {}


def pick_examples(rendered: list, convs: list, n: int) -> list:
    """The first n rendered examples; when the data has tool calls and none of those shows one, the
    last of them is replaced by the first example that does, so the call's rendering is seen."""
    shown = rendered[:n]
    calling = {c.source for c in convs if any(m.tool_calls for m in c.messages)}
    if not shown or not calling or any(r.source in calling for r in shown):
        return shown
    first = next((r for r in rendered if r.source in calling), None)
    return shown if first is None else shown[:-1] + [first]


def run_specialist(cfg, console, n_show: int) -> int:
    """Specialist data: read, split and check it as training does (no model needed), show and count it."""
    from dianjing.specialist.task import SpecialistData

    def say(text: str) -> None:  # file paths stay whole, for copying
        console.print(text, markup=False, soft_wrap=True)

    said: list[str] = []  # the readers' report lines, printed in the summary
    data = SpecialistData(cfg, log=said.append)  # bad records stop or are counted per data.on_error
    for ex in data.train_examples[:n_show]:
        console.rule(ex.where)
        say(describe(ex))
    console.rule("summary")
    for line in said:
        say(line)
    held = (f"{len(data.eval_examples)} held out from data.eval_files" if cfg.data.eval_files
            else f"{len(data.eval_examples)} held out (data.eval_fraction {cfg.data.eval_fraction})")
    n = len(data.train_examples)
    say(f"task {cfg.task.type}: {n} training example{'s' if n != 1 else ''}"
        + (f" (data.max_examples {cfg.data.max_examples})" if cfg.data.max_examples else "") + f", {held}")
    counts = label_counts(data.train_examples)
    if counts:
        what = "entity types" if cfg.task.type == "tag" else "labels"
        order = sorted(counts) if cfg.task.type == "tag" else data.labels  # classify/pair: the label ids' order
        say(f"{what} {len(counts)}: " + ", ".join(f"{k} {counts[k]}" for k in order))
    return 0


def describe(ex) -> str:
    """One example as text: classify/pair text(s) and label, tag token/TAG pairs, extract-qa question and answers."""
    if hasattr(ex, "tokens"):
        tags = ex.tags or ["O"] * len(ex.tokens)
        return " ".join(t if tag == "O" else f"{t}/{tag}" for t, tag in zip(ex.tokens, tags))
    if hasattr(ex, "question"):
        context = ex.context if len(ex.context) <= 300 else ex.context[:300] + "…"
        return f"question: {ex.question}\ncontext: {context}\nanswers: {[a for a, _ in ex.answers]}"
    return f"text: {ex.text}" + (f"\ntext_b: {ex.text_b}" if ex.text_b is not None else "") + f"\nlabel: {ex.label}"


def label_counts(examples) -> Counter:
    """Examples per label (classify/pair) or entities per type (tag); empty for extract-qa."""
    from dianjing.data.specialist_readers.tagging import tag_type

    counts: Counter = Counter()
    for ex in examples:
        if getattr(ex, "label", None) is not None:
            counts[ex.label] += 1
        for t in getattr(ex, "tags", None) or []:
            if t.startswith("B-"):
                counts[tag_type(t)] += 1
    return counts
