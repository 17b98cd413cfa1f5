"""The requests `dianjing serve` takes, and the checks they pass before reaching the model.

Everything here is plain synchronous code that the server runs off its event loop: parsing
the body, walking it for depth and text that cannot be encoded, strict pydantic schemas (a
string is not a number), the messages (tool calls and results included, checked with the data
readers' `ToolLinker`), `tools` and `tool_choice`, the chat template, tokenizing and the length bounds.
What comes out is a `Job` the batcher can run; what does not is an `ApiError` that names
the field, with a message safe to show a client (no exception text from inside).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dianjing.data.formats import ToolLinker
from dianjing.data.readers import RawRecord
from dianjing.data.schema import Conversation, Message, ToolCall
from dianjing.errors import DataError
from dianjing.infer.generate import SamplingParams
from dianjing.infer.models import Served
from dianjing.infer.tool_calls import ToolPlan, call_opening, render


@dataclass
class Limits:
    """Bounds on what one request may ask for."""

    max_body_bytes: int = 1_000_000
    body_timeout: float = 30.0  # seconds to receive the whole request body
    max_depth: int = 16  # nesting of arrays and objects in the body
    max_tokens: int = 2048  # the largest max_tokens a request may ask for
    default_max_tokens: int = 512  # when the request gives none
    max_messages: int = 256
    max_tools: int = 128  # functions in `tools` (OpenAI's limit too)
    max_tool_calls: int = 128  # calls in one assistant message
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
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    functions: list | None = None
    function_call: str | dict | None = None
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
        checks += [("functions", bool(req.functions)), ("function_call", req.function_call is not None),
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
    tools: ToolPlan | None = None  # chat requests with tools: what to read back from the answer
    opening: str = ""  # text pre-filled as the start of the answer (a forced call's opening)


def chat_job(req: ChatRequest, served: Served, ctx: int, limits: Limits) -> Job:
    specs = _tools(req.tools, limits)
    plan = _plan(req, specs)
    messages = _messages(req.messages, limits)
    chars = sum(len(m.content) + sum(len(json.dumps(c.arguments)) for c in m.tool_calls) for m in messages)
    _check_chars(chars, "messages", ctx, limits)
    if specs:
        _check_chars(len(json.dumps(specs, ensure_ascii=False)), "tools", ctx, limits)
    # tool_choice "none": the tools are not shown, so the model is not invited to call them
    conv = Conversation(tuple(messages), tools=specs if plan is not None and plan.parse else None)
    try:
        text = render(served.template, conv)
    except jinja2.TemplateError as e:  # the template itself refuses, e.g. roles that do not alternate
        raise ApiError(400, f"the chat template of '{served.name}' refuses these messages: {e.message or 'no reason given'}",
                       param="messages") from None
    except Exception:  # a model's own template failing in another way: still these messages, not the server
        raise ApiError(400, f"the chat template of '{served.name}' cannot render these messages",
                       param="messages") from None
    ids = served.tokenizer(text, add_special_tokens=False)["input_ids"]
    opening = ""
    if plan is not None and plan.choice in ("required", "function"):
        opening = call_opening(served.template, conv, plan.name)
        if opening is None:
            what = f"naming {plan.name!r}" if plan.name else "'required'"
            raise ApiError(400, f"tool_choice {what} is not supported with the chat template of '{served.name}': "
                                "the server cannot pre-fill the start of a call in the way it writes calls "
                                "(see docs/serving.md); use 'auto'", param="tool_choice", code="unsupported_parameter")
        ids = ids + served.tokenizer(opening, add_special_tokens=False)["input_ids"]
    job = _job(req, served, ids, served.template.stop_strings, ctx, limits,
               req.max_completion_tokens or req.max_tokens, "messages", strip_start=True)
    return replace(job, tools=plan if plan is not None and plan.parse else None, opening=opening)


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


MAX_ID_CHARS = 256  # a call's id (OpenAI's are about 30)
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
TOOL_SHAPE = "{'type': 'function', 'function': {'name': …, 'description': …, 'parameters': {…}}}"


def _tools(raw: list | None, limits: Limits) -> tuple[dict, ...] | None:
    """The request's tools as function specs, kept as sent (training renders them as its data gives them)."""
    if not raw:
        return None
    if len(raw) > limits.max_tools:
        raise ApiError(400, f"{len(raw)} tools; this server takes at most {limits.max_tools}", param="tools")
    specs: list[dict] = []
    for k, t in enumerate(raw):
        where, f = f"tools[{k}]", t.get("function") if isinstance(t, dict) else None
        if not isinstance(f, dict) or t.get("type") != "function":
            raise ApiError(400, f"{where}: expected {TOOL_SHAPE}", param="tools")
        name = f.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise ApiError(400, f"{where}.function.name: a function's name is 1 to 64 letters, digits, '_' or '-'",
                           param="tools")
        if any(s["name"] == name for s in specs):
            raise ApiError(400, f"{where}.function.name: {name!r} is listed twice", param="tools")
        for key, kind, what in (("description", str, "text"), ("parameters", dict, "a JSON schema object")):
            if f.get(key) is not None and not isinstance(f[key], kind):
                raise ApiError(400, f"{where}.function.{key}: expected {what}", param="tools")
        specs.append(f)
    return tuple(specs)


def _plan(req: ChatRequest, specs: tuple[dict, ...] | None) -> ToolPlan | None:
    """tool_choice: "auto" (the default with tools), "none", "required" or {"type": "function", "function": {"name"}}."""
    choice, name = req.tool_choice, None
    if specs is None:
        if choice not in (None, "none"):
            raise ApiError(400, "tool_choice needs tools; send the functions in 'tools'", param="tool_choice")
        return None
    if isinstance(choice, dict):
        fn = choice.get("function")
        if choice.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ApiError(400, "tool_choice: expected 'auto', 'none', 'required' or "
                                "{'type': 'function', 'function': {'name': …}}", param="tool_choice")
        name, listed = fn["name"], [t["name"] for t in specs]
        if name not in listed:
            raise ApiError(400, f"tool_choice names {name[:64]!r}, which is not one of the tools "
                                f"({', '.join(listed)})", param="tool_choice")
        choice = "function"
    elif choice is None:
        choice = "auto"
    elif choice not in ("auto", "none", "required"):
        raise ApiError(400, f"tool_choice is {choice[:40]!r}; use 'auto', 'none', 'required' or "
                            "{'type': 'function', 'function': {'name': …}}", param="tool_choice")
    return ToolPlan(specs, choice, name, req.parallel_tool_calls is not False)


def _data_error(e: DataError) -> ApiError:
    return ApiError(400, f"{e.field}: {e.detail}" if e.field else e.detail, param=e.field)


def _messages(raw: list, limits: Limits) -> list[Message]:
    """Check roles, content, calls and results; text parts are joined; 'developer' is taken as 'system'.
    A tool message answers a call of the assistant message before it (by tool_call_id), and every call
    is answered before the next message of another role."""
    if len(raw) > limits.max_messages:
        raise ApiError(400, f"{len(raw)} messages; this server takes at most {limits.max_messages}", param="messages")
    link = ToolLinker(RawRecord(None, "request", 0), None)  # formats' checks: arguments, ids, results
    out: list[Message] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"{where} must be an object with 'role' and 'content'", param=where)
        role = "system" if m.get("role") == "developer" else m.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            shown = m.get("role") if isinstance(m.get("role"), str) else type(m.get("role")).__name__
            raise ApiError(400, f"{where}.role is {str(shown)[:40]!r}; use 'system', 'user', 'assistant' or 'tool'",
                           param=f"{where}.role", code="invalid_role")
        if role == "tool":
            out.append(_tool_result(m, where, link, out))
            continue
        if link.pending:
            raise ApiError(400, f"{where}: the calls of the assistant message before it are not all answered "
                                f"({', '.join(c.id for c in link.pending)}); send a 'tool' message with each "
                                "tool_call_id first", param=where)
        calls = _calls(m, where, link, limits) if role == "assistant" else ()
        content = "" if calls and m.get("content") is None else _content(m.get("content"), f"{where}.content")
        link.turn(calls)
        out.append(Message(role, content, tool_calls=calls))
    if link.pending:
        raise ApiError(400, "the last message's calls are not answered; send a 'tool' message with each "
                            "tool_call_id after it", param=f"messages[{len(raw) - 1}]")
    if not any(m.content.strip() or m.tool_calls for m in out):
        raise ApiError(400, "every message is empty; send some text", param="messages")
    return out


def _content(content: object, where: str) -> str:
    if isinstance(content, list):
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                   for p in content):
            raise ApiError(400, f"{where}: only text parts ({{'type': 'text', 'text': …}}) are supported", param=where)
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise ApiError(400, f"{where} must be a string or a list of text parts", param=where)
    return content


def _calls(m: dict, where: str, link: ToolLinker, limits: Limits) -> tuple[ToolCall, ...]:
    """An assistant message's tool_calls [{id, type: "function", function: {name, arguments}}]."""
    raw, field = m.get("tool_calls"), f"{where}.tool_calls"
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ApiError(400, f"{field}: expected a list of calls", param=field)
    if len(raw) > limits.max_tool_calls:
        raise ApiError(400, f"{field}: {len(raw)} calls; at most {limits.max_tool_calls}", param=field)
    calls: list[ToolCall] = []
    for j, c in enumerate(raw):
        at = f"{field}[{j}]"
        if not isinstance(c, dict) or c.get("type", "function") != "function" or not isinstance(c.get("function"), dict):
            raise ApiError(400, f"{at}: expected {{'id': …, 'type': 'function', 'function': {{'name': …, "
                                "'arguments': '<JSON text>'}}", param=at)
        if not isinstance(c.get("id"), str) or not 0 < len(c["id"]) <= MAX_ID_CHARS:
            raise ApiError(400, f"{at}.id: missing or over {MAX_ID_CHARS} characters; a call has the id its tool "
                                "message answers", param=f"{at}.id")
        if any(c["id"] == k.id for k in calls):
            raise ApiError(400, f"{at}.id: {c['id'][:64]!r} is used twice in this message", param=f"{at}.id")
        fn = c["function"]
        try:
            calls.append(link.call(f"{at}.function", fn.get("name"), fn.get("arguments"), c["id"]))
        except DataError as e:
            raise _data_error(e) from None
    return tuple(calls)


def _tool_result(m: dict, where: str, link: ToolLinker, before: list[Message]) -> Message:
    if not before or not (before[-1].role == "tool" or before[-1].tool_calls):
        raise ApiError(400, f"{where}.role is 'tool', but a tool message must follow the assistant message "
                            "whose tool_calls it answers", param=f"{where}.role", code="invalid_role")
    cid = m.get("tool_call_id")
    if not isinstance(cid, str) or not 0 < len(cid) <= MAX_ID_CHARS:
        raise ApiError(400, f"{where}.tool_call_id: missing or over {MAX_ID_CHARS} characters; a tool message "
                            "names the call it answers",
                       param=f"{where}.tool_call_id")
    if not link.pending:
        raise ApiError(400, f"{where}: every call of the assistant message before it is already answered",
                       param=f"{where}.tool_call_id")
    try:
        call = link.result(f"{where}.tool_call_id", cid)
    except DataError as e:
        raise _data_error(e) from None
    return Message("tool", _content(m.get("content"), f"{where}.content"), tool_call_id=call.id, name=call.name)


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
