"""The `dianjing synth` config: its own YAML (sections teacher, generate, filters, output) + --set.

Separate from the training RunConfig; the same rules: extra="forbid", so a typo fails before
any request is made, naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

# _Strict: the one pydantic base of every config model (extra="forbid", validate_assignment)
from dianjing.config import DEVICE_PATTERN, _Strict, read_yaml_tree, validate
from dianjing.errors import ConfigError


class TeacherSettings(_Strict):
    base_url: str | list[str] | None = Field(
        None, description="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1, or a list of them serving "
                          "the same model: requests are spread over them, and one that fails is taken out for "
                          "endpoint_cooldown_s, then tried again")
    model: str | None = Field(None, description="model name sent in every request")
    api: Literal["chat", "completions"] = Field("chat", description="POST /chat/completions or /completions")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key "
                                                           "(the key itself is never written anywhere)")
    terms_of_use: str | None = Field(
        None, description="the teacher's terms of use (name, version or URL); copied into every record's provenance")
    local_model: str | None = Field(None, description="no base_url: generate with this model (folder, run, alias) "
                                                      "through transformers")
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: str = Field("auto", pattern=DEVICE_PATTERN,
                        description="local_model: where it computes, auto (CUDA when present, else MPS, else the "
                                    "CPU) | cpu | cuda | cuda:N | mps")
    max_concurrency: int = Field(8, ge=1, description="requests in flight at once, per endpoint")
    timeout_s: float = Field(120.0, gt=0, description="give up on one attempt after this long")
    max_retries: int = Field(5, ge=0, description="retries after a 429, a 5xx, a timeout or a connection error")
    backoff_s: float = Field(1.0, ge=0, description="first retry waits about this long, doubling each time")
    max_backoff_s: float = Field(60.0, ge=0, description="longest wait between attempts (Retry-After included)")
    endpoint_cooldown_s: float = Field(30.0, ge=0, description="several base_url: an endpoint whose request "
                                                                "failed gets none for this long (the request is "
                                                                "retried on another at once)")
    tokens_per_minute: int | None = Field(None, ge=1, description="token budget (prompt + max_tokens) per minute")
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1, description="max_tokens of every request")
    price_per_1m_prompt_tokens: float | None = Field(None, ge=0)
    price_per_1m_completion_tokens: float | None = Field(None, ge=0)
    currency: str = "USD"

    def urls(self) -> list[str]:
        """The endpoints' API roots, without a trailing slash ([] without base_url)."""
        if self.base_url is None:
            return []
        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)
        return [u.rstrip("/") for u in urls]


class GenerateSettings(_Strict):
    mode: Literal["self-instruct", "alpaca"] = Field(
        "self-instruct", description="self-instruct: instructions → classification → inputs → outputs, one stage "
                                     "at a time; alpaca: instruction, input and output in one request per batch")
    num_instructions: int = Field(100, ge=1, description="instructions to keep (self-instruct) / examples (alpaca)")
    seeds: str = Field("builtin:seed_tasks", description="seed tasks in self-instruct's seed_tasks.jsonl format")
    seed_examples: int = Field(6, ge=1, description="seed instructions shown in each instruction prompt")
    machine_examples: int = Field(2, ge=0, description="generated instructions shown in each instruction prompt")
    new_per_request: int = Field(8, ge=1, description="new tasks asked for in one request")
    requests_per_round: int = Field(8, ge=1, description="instruction requests built from the same kept pool")
    instances_per_task: int = Field(3, ge=1, description="inputs asked for per task (input-first tasks)")
    instance_demos: int = Field(2, ge=0, description="seed tasks shown as worked examples in instance prompts")
    seed: int = 0
    max_idle_rounds: int = Field(20, ge=1, description="stop after this many rounds in a row that keep nothing")


class FilterSettings(_Strict):
    rouge_threshold: float = Field(0.7, gt=0, lt=1, description="reject an instruction whose ROUGE-L against a "
                                                                 "kept one (seeds included) is above this")
    min_instruction_tokens: int = Field(3, ge=0, description="tokens = words, or characters for CJK text")
    max_instruction_tokens: int = Field(150, ge=1)
    max_input_tokens: int = Field(1000, ge=1)
    max_output_tokens: int = Field(2000, ge=1)
    extra_keywords: list[str] = Field(default_factory=list, description="more words that reject an instruction")


class OutputSettings(_Strict):
    out: str = Field("synth.jsonl", description="alpaca-format JSONL with provenance, written incrementally")
    work_dir: str | None = Field(None, description="intermediate files, request journal, commits "
                                                   "(default: OUT without .jsonl + '.work')")
    report: str | None = Field(None, description="default: OUT without .jsonl + '.report.json'")

    def paths(self) -> tuple[Path, Path, Path]:
        out = Path(self.out)
        stem = out.with_suffix("") if out.suffix in (".jsonl", ".json") else out
        work = Path(self.work_dir) if self.work_dir else stem.with_name(stem.name + ".work")
        report = Path(self.report) if self.report else stem.with_name(stem.name + ".report.json")
        return out, work, report


class SynthConfig(_Strict):
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    generate: GenerateSettings = Field(default_factory=GenerateSettings)
    filters: FilterSettings = Field(default_factory=FilterSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)

    def identity(self) -> dict[str, Any]:
        """Settings that decide what is generated: a resumed run must use the same ones."""
        t = self.teacher
        return {"teacher": {k: getattr(t, k) for k in ("base_url", "model", "api", "local_model", "precision",
                                                         "temperature", "top_p", "max_tokens", "terms_of_use")},
                "generate": self.generate.model_dump(exclude={"num_instructions"}),
                "filters": self.filters.model_dump(), "out": str(Path(self.output.out).resolve())}


TERMS_FIX = ("name the terms the teacher's outputs come under, e.g. --set teacher.terms_of_use='OpenAI Terms of Use "
             "(2024-01-31)', 'Apache-2.0 (Qwen2.5-7B-Instruct)' or 'own model, no restrictions'; it is written into "
             "every record's provenance (see docs/teacher.md)")


def load_synth_config(path: str | Path | None = None, overrides: list[str] | None = None) -> SynthConfig:
    """Read a synth YAML config (optional), apply --set overrides, validate and check the teacher."""
    tree = read_yaml_tree(path, overrides, "teacher/generate/filters/output")
    return validate(SynthConfig, tree, str(path) if path is not None else "synth config", "synth config")


def check_teacher(cfg: SynthConfig) -> None:
    """What `dianjing synth` needs before it sends anything."""
    t = cfg.teacher
    if not (t.terms_of_use or "").strip():
        raise ConfigError("teacher.terms_of_use is not set", fix=TERMS_FIX)
    if t.urls() and t.local_model:
        raise ConfigError("both teacher.base_url and teacher.local_model are set",
                          fix="keep one: base_url for a server, local_model to generate in this process")
    if not t.urls() and not t.local_model:
        raise ConfigError("no teacher: set teacher.base_url (with teacher.model) or teacher.local_model",
                          fix="e.g. --teacher-url http://127.0.0.1:8000/v1 --teacher-model NAME "
                              "(vLLM, llama.cpp server, Ollama, `dianjing serve`, a hosted API), "
                              "or --set teacher.local_model=PATH")
    if t.base_url is not None:
        check_urls(t, "teacher")
        if not t.model:
            raise ConfigError("teacher.model is not set", fix="--teacher-model NAME: the model the server serves "
                                                             "(GET BASE_URL/models lists them)")


def check_urls(t: TeacherSettings, section: str) -> None:
    """Every endpoint an http(s) API root, none twice (the teacher's and the judge's)."""
    urls = t.urls()
    if not urls:
        raise ConfigError(f"{section}.base_url is an empty list", fix="give one URL or several")
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise ConfigError(f"{section}.base_url {u!r} is not an http(s) URL",
                              fix="e.g. http://127.0.0.1:8000/v1 (the API root, without /chat/completions)")
    twice = sorted({u for u in urls if urls.count(u) > 1})
    if twice:
        raise ConfigError(f"{section}.base_url names {', '.join(twice)} more than once",
                          fix="list each endpoint once; max_concurrency sets the requests per endpoint")
