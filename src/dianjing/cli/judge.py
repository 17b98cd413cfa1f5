"""dianjing judge: compare two runs (or a run and a model, a file of answers or the references) on a question
set with an OpenAI-compatible judge; or grade answers 1–10."""

from __future__ import annotations

from dianjing.cli.common import add_device_option, check_device, choices
from dianjing.config import DataConfig, ModelConfig


def add_parser(sub) -> None:
    p = sub.add_parser(
        "judge", help="LLM-as-judge: win rate of one run against another on a question set, or 1–10 grades",
        description="Answer a question set with each side (a run or a bare model, with its own chat template; "
                    "or a file of answers; or 'reference', the questions' reference answers) and have an "
                    "OpenAI-compatible judge compare them: pairwise in both orders (a verdict that flips with "
                    "the order is a tie), or with --mode single a 1-10 grade per answer; maths, reasoning and "
                    "coding questions show the judge their reference answer. Prints win/tie/loss, the "
                    "tie-adjusted win rate with a bootstrap interval, the agreement of the two orders, answer "
                    "lengths and per-category results; writes result.json, judgments.jsonl (with the judge's "
                    "reasoning), the answers and the request journal to the output folder. A killed run "
                    "resumes where it stopped when started again with the same command.")
    p.add_argument("a", metavar="A", help="side a: a run folder, a model (folder, hub id, alias), an answers file "
                                          "(.jsonl/.json) or 'reference'")
    p.add_argument("b", metavar="B", nargs="?", help="side b (pairwise); the same kinds as A")
    p.add_argument("--questions", "-q", default="builtin:questions", metavar="FILE",
                   help="MT-Bench question.jsonl, self-instruct user-oriented instructions, any instruction file, or "
                        "builtin:questions (default: 80 zh-TW / English questions in 9 categories)")
    p.add_argument("--judge-url", action="append", metavar="URL",
                   help="the judge's OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1; repeated, several "
                        "servers of the same model share the requests")
    p.add_argument("--judge-model", metavar="NAME", help="the model name the judge's server serves")
    p.add_argument("--mode", choices=["pairwise", "single"], default="pairwise")
    p.add_argument("--out", "-o", metavar="DIR",
                   help="output folder (default A/eval/judge-<mode>-<questions>-vs-<B>/, or ./eval/… for a model)")
    p.add_argument("--category", nargs="+", metavar="C", help="judge only these categories")
    p.add_argument("--max-questions", type=int, metavar="N", help="judge only the first N questions")
    p.add_argument("--max-new-tokens", type=int, default=256, help="answer length, per turn (default 256)")
    p.add_argument("--temperature", type=float, default=0.0, help="answering: 0 (default) is greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="questions answered at once (default 8)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    p.add_argument("--precision", choices=choices(ModelConfig, "precision"), default="auto")
    add_device_option(p)
    p.add_argument("--on-error", choices=choices(DataConfig, "on_error"), default="skip",
                   help="bad question or answer records: stop at the first, or skip and count them (default)")
    p.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                   help="judge client settings, e.g. --set judge.max_concurrency=16, judge.timeout_s=60, "
                        "judge.max_tokens=512, judge.tokens_per_minute=100000, judge.api_key_env=MY_KEY, "
                        "judge.price_per_1m_prompt_tokens=2.5 (the teacher.* keys of docs/configuration.md)")
    p.set_defaults(func=run)


def judge_settings(args):
    """The judge's client settings: the teacher's keys under judge.*, greedy and 1024 tokens unless set."""
    from pydantic import Field

    from dianjing.config import _Strict, read_yaml_tree, validate
    from dianjing.errors import ConfigError
    from dianjing.teacher.settings import TeacherSettings, check_urls

    class JudgeConfig(_Strict):
        judge: TeacherSettings = Field(default_factory=TeacherSettings)

    tree = read_yaml_tree(None, ["judge.temperature=0", "judge.max_tokens=1024", *args.set], "judge")
    if args.judge_url:
        tree["judge"]["base_url"] = args.judge_url[0] if len(args.judge_url) == 1 else args.judge_url
    if args.judge_model:
        tree["judge"]["model"] = args.judge_model
    t = validate(JudgeConfig, tree, "judge settings", "judge settings").judge
    if t.base_url is None:
        raise ConfigError("no judge: give --judge-url URL --judge-model NAME",
                          fix="any OpenAI-compatible server: a hosted API, vLLM, llama.cpp's server, or "
                              "`dianjing serve MODEL` (docs/evaluation.md says which judges are worth trusting)")
    check_urls(t, "judge")
    if not t.model:
        raise ConfigError("no judge model: give --judge-model NAME", fix="GET URL/models lists what the server serves")
    return t


def run(args) -> int:
    from dianjing.cli import log
    from dianjing.eval.judge import run_judge
    from dianjing.eval.judge_stats import print_pairwise, print_single
    from dianjing.eval.runner import Settings

    settings = judge_settings(args)  # before any model is loaded
    check_device(args.device)
    gen = Settings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                   batch_size=args.batch_size)
    result, out = run_judge(args.a, args.b, questions=args.questions, mode=args.mode, judge_settings=settings,
                            gen=gen, out=args.out, bootstrap=args.bootstrap, seed=args.seed,
                            max_questions=args.max_questions, categories=args.category, on_error=args.on_error,
                            precision=args.precision, device=args.device, log=log)
    if args.mode == "pairwise":
        print_pairwise(result["results"], args.a, args.b)
    else:
        print_single(result["results"], {"a": args.a, **({"b": args.b} if args.b else {})})
    for w in result["warnings"]:
        log(f"note: {w}")
    if not result["complete"]:
        log("some judge requests failed after their retries: run the same command again to retry them "
            "(the replies already received are read from the journal, not paid for again)")
    log(f"results: {out / 'result.json'}; every judgment with its reasoning: {out / 'judgments.jsonl'}")
    return 0
