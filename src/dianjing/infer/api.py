"""The requests `dianjing serve` takes, and the checks they pass before reaching the model.

Everything here is plain synchronous code that the server runs off its event loop: parsing
the body, walking it for depth and text that cannot be encoded, strict pydantic schemas (a
string is not a number), the messages, the chat template, tokenizing and the length bounds.
What comes out is a `Job` the batcher can run; what does not is an `ApiError` that names
the field, with a message safe to show a client (no exception text from inside).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dianjing.infer.models import Served
from dianjing.infer.generate import SamplingParams


@dataclass
class Limits:
    """Bounds on what one request may ask for."""

    max_body_bytes: int = 1_000_000
    body_timeout: float = 30.0  # seconds to receive the whole request body
    max_depth: int = 16  # nesting of arrays and objects in the body
    max_tokens: int = 2048  # the largest max_tokens a request may ask for
    default_max_tokens: int = 512  # when the request gives none
    max_messages: int = 256
    max_n: int = 8
    max_stop: int = 4
    max_stop_chars: int = 128  # characters in one stop string (streamed text is held back by this much)
    max_prompt_chars: int | None = None  # None: 16 characters per token of the context, checked before tokenizing
    max_waiting: int = 256  # requests queued beyond this get 429

    def prompt_chars(self, context_length: int) -> int:
        return self.max_prompt_chars if self.max_prompt_chars is not None else 16 * context_length


class ApiError(Exception):
    """An error the client gets as an OpenAI-style error object with an HTTP status."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# --- the schemas ---------------------------------------------------------------------------------


class _Common(BaseModel):
    # strict: "4" is not a number and "yes" not a boolean (ints are still taken for floats);
    # extra fields are ignored: clients send some that change nothing here (user, metadata…)
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**62)
    stream: bool = False
    stream_options: dict | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict | None = None
    logprobs: bool | int | None = None


class ChatRequest(_Common):
    messages: list = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list | None = None
    functions: list | None = None
    response_format: dict | None = None
    top_logprobs: int | None = None


class CompletionRequest(_Common):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


# --- parsing -------------------------------------------------------------------------------------


def parse(body: bytes, schema: type[_Common], limits: Limits) -> _Common:
    """JSON → a checked request, or an ApiError naming what is wrong."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise ApiError(400, f"the request body is nested more than {limits.max_depth} levels deep",
                       code="invalid_json") from None
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text", code="invalid_json") from None
    except ValueError as e:  # json.JSONDecodeError: its message says where, nothing more
        where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise ApiError(400, f"the request body is not valid JSON{where}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    _walk(data, limits.max_depth)
    try:
        req = schema.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False, include_input=False)[0]
        param = ".".join(str(x) for x in err["loc"]) or None
        raise ApiError(400, f"{param}: {err['msg']}" if param else err["msg"], param=param) from None
    _unsupported(req)
    return req


def _walk(data: object, max_depth: int) -> None:
    """Refuse bodies nested deeper than `max_depth`, and strings (keys too) that UTF-8 cannot
    encode, such as a lone surrogate "\\ud800" (which JSON allows and every tokenizer rejects)."""
    stack: list[tuple[object, str, int]] = [(data, "", 1)]
    while stack:
        obj, path, depth = stack.pop()
        if isinstance(obj, str):
            _utf8(obj, path)
            continue
        if not isinstance(obj, (dict, list)):
            continue
        if depth > max_depth:
            raise ApiError(400, f"{path or 'the request body'} is nested more than {max_depth} levels deep",
                           param=path or None, code="invalid_json")
        if isinstance(obj, dict):
            for k, v in obj.items():
                key = f"{path}.{k}" if path else str(k)
                _utf8(k, path or "the request body")
                stack.append((v, key, depth + 1))
        else:
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj))


def _utf8(s: str, path: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{path}: the text holds a character that UTF-8 cannot encode (a lone surrogate)",
                       param=path or None) from None


def _unsupported(req: _Common) -> None:
    """Refuse what would change the answer but is not implemented, rather than ignore it."""
    checks = [("presence_penalty", bool(req.presence_penalty)), ("frequency_penalty", bool(req.frequency_penalty)),
              ("logit_bias", bool(req.logit_bias)), ("logprobs", bool(req.logprobs))]
    if isinstance(req, ChatRequest):
        checks += [("tools", bool(req.tools)), ("functions", bool(req.functions)),
                   ("top_logprobs", bool(req.top_logprobs)),
                   ("response_format", bool(req.response_format) and req.response_format.get("type") != "text")]
    else:
        checks += [("echo", req.echo), ("suffix", bool(req.suffix)), ("best_of", (req.best_of or 1) > 1)]
    for name, used in checks:
        if used:
            raise ApiError(400, f"'{name}' is not supported by this server; leave it out", param=name,
                           code="unsupported_parameter")


# --- from a request to a job ---------------------------------------------------------------------


@dataclass
class Job:
    """A checked request, ready for the batcher."""

    served: Served
    ids: list[int]
    params: SamplingParams
    n: int
    stops: tuple[str, ...]
    stream: bool
    include_usage: bool
    strip_start: bool  # chat answers drop the whitespace they start with (`generate.AnswerStart`)


def chat_job(req: ChatRequest, served: Served, ctx: int, limits: Limits) -> Job:
    messages = _messages(req.messages, limits.max_messages)
    _check_chars(sum(len(m["content"]) for m in messages), "messages", ctx, limits)
    try:
        text = served.template.render(messages, add_generation_prompt=True)
    except jinja2.TemplateError as e:  # the template itself refuses, e.g. roles that do not alternate
        raise ApiError(400, f"the chat template of '{served.name}' refuses these messages: {e.message or 'no reason given'}",
                       param="messages") from None
    except Exception:  # a model's own template failing in another way: still these messages, not the server
        raise ApiError(400, f"the chat template of '{served.name}' cannot render these messages",
                       param="messages") from None
    ids = served.tokenizer(text, add_special_tokens=False)["input_ids"]
    return _job(req, served, ids, served.template.stop_strings, ctx, limits,
                req.max_completion_tokens or req.max_tokens, "messages", strip_start=True)


def completion_job(req: CompletionRequest, served: Served, ctx: int, limits: Limits) -> Job:
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise ApiError(400, "send one prompt per request", param="prompt")
        prompt = prompt[0]
    if not prompt:
        raise ApiError(400, "prompt is empty; send the text to continue", param="prompt")
    _check_chars(len(prompt), "prompt", ctx, limits)
    ids = served.tokenizer(prompt, add_special_tokens=True)["input_ids"]
    return _job(req, served, ids, (), ctx, limits, req.max_tokens, "prompt", strip_start=False)


def _messages(raw: list, limit: int) -> list[dict]:
    """Check roles and content; text parts are joined; 'developer' is taken as 'system'."""
    if len(raw) > limit:
        raise ApiError(400, f"{len(raw)} messages; this server takes at most {limit}", param="messages")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"{where} must be an object with 'role' and 'content'", param=where)
        role = "system" if m.get("role") == "developer" else m.get("role")
        if role not in ("system", "user", "assistant"):
            shown = m.get("role") if isinstance(m.get("role"), str) else type(m.get("role")).__name__
            raise ApiError(400, f"{where}.role is {str(shown)[:40]!r}; use 'system', 'user' or 'assistant' "
                                "(tool messages are not supported)", param=f"{where}.role", code="invalid_role")
        content = m.get("content")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ApiError(400, f"{where}.content: only text parts ({{'type': 'text', 'text': …}}) are "
                                    "supported", param=f"{where}.content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(400, f"{where}.content must be a string or a list of text parts",
                           param=f"{where}.content")
        out.append({"role": role, "content": content})
    if not any(m["content"].strip() for m in out):
        raise ApiError(400, "every message is empty; send some text", param="messages")
    return out


def _check_chars(n: int, param: str, ctx: int, limits: Limits) -> None:
    """A cheap bound before tokenizing: no tokenizer packs 16 characters into every token."""
    bound = limits.prompt_chars(ctx)
    if n > bound:
        raise ApiError(400, f"the {param} hold {n} characters; this server takes at most {bound} "
                            f"(the model's context is {ctx} tokens)", param=param, code="context_length_exceeded")


def _job(req: _Common, served: Served, ids: list[int], stops: tuple[str, ...], ctx: int, limits: Limits,
         max_tokens: int | None, param: str, *, strip_start: bool) -> Job:
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise ApiError(400, f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens} "
                            "(start it with --max-tokens-limit to change that)", param="max_tokens")
    if not ids:
        raise ApiError(400, f"the {param} come to no tokens at all; send some text", param=param)
    if len(ids) >= ctx:
        raise ApiError(400, f"the prompt has {len(ids)} tokens; the model takes at most {ctx}, answer included",
                       param=param, code="context_length_exceeded")
    if req.n > limits.max_n:
        raise ApiError(400, f"n is {req.n}; this server allows at most {limits.max_n}", param="n")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > limits.max_stop:
        raise ApiError(400, f"{len(stop)} stop sequences; at most {limits.max_stop}", param="stop")
    for i, s in enumerate(stop):
        if len(s) > limits.max_stop_chars:
            where = "stop" if isinstance(req.stop, str) else f"stop[{i}]"
            raise ApiError(400, f"{where} has {len(s)} characters; a stop sequence may have at most "
                                f"{limits.max_stop_chars}", param=where)
    budget = min(max_tokens or min(limits.default_max_tokens, limits.max_tokens), ctx - len(ids))
    params = SamplingParams(budget, req.temperature, req.top_p, stop, req.seed)
    include_usage = bool(req.stream and (req.stream_options or {}).get("include_usage"))
    return Job(served, ids, params, req.n, stops, req.stream, include_usage, strip_start)
