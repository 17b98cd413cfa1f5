"""An OpenAI-compatible HTTP server for runs and models (`dianjing serve`).

POST /v1/chat/completions and /v1/completions (both can stream as server-sent events),
GET /v1/models and /health. One base model is loaded once; the LoRA-family adapters of
several runs sit on it as named PEFT adapters, and a request's `model` field picks one by
run-folder name, or "base" for the bare model. Prompts are rendered with the chat template
each run was trained with. Generation runs in one worker thread (`batcher.Batcher`) that
batches concurrent requests; tokens reach each request through its own asyncio queue.

Every error is an OpenAI-style object, {"error": {"message", "type", "param", "code"}},
with a 4xx status for a bad request and no stack trace.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dianjing.infer.batcher import Batcher, GenRequest, ModelSet, Served
from dianjing.infer.generate import SamplingParams, prompt_ids


# --- requests -----------------------------------------------------------------------------------


@dataclass
class Limits:
    """Bounds on what one request may ask for."""

    max_body_bytes: int = 1_000_000
    max_tokens: int = 2048  # the largest max_tokens a request may ask for
    default_max_tokens: int = 512  # when the request gives none
    max_messages: int = 256
    max_n: int = 8
    max_stop: int = 4
    max_waiting: int = 256  # requests queued beyond this get 429


class ApiError(Exception):
    """An error the client gets as an OpenAI-style error object with an HTTP status."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields that change nothing here (user, metadata…)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
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
            raise ApiError(400, f"{where}.role is {m.get('role')!r}; use 'system', 'user' or 'assistant' "
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
    return out


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


def _job(req: _Common, served: Served, ids: list[int], stops: tuple[str, ...], ctx: int, limits: Limits,
         max_tokens: int | None) -> Job:
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise ApiError(400, f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens} "
                            "(start it with --max-tokens-limit to change that)", param="max_tokens")
    if len(ids) >= ctx:
        raise ApiError(400, f"the prompt has {len(ids)} tokens; the model takes at most {ctx}, answer included",
                       param="messages" if isinstance(req, ChatRequest) else "prompt",
                       code="context_length_exceeded")
    if req.n > limits.max_n:
        raise ApiError(400, f"n is {req.n}; this server allows at most {limits.max_n}", param="n")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > limits.max_stop:
        raise ApiError(400, f"{len(stop)} stop sequences; at most {limits.max_stop}", param="stop")
    budget = min(max_tokens or min(limits.default_max_tokens, limits.max_tokens), ctx - len(ids))
    params = SamplingParams(budget, req.temperature, req.top_p, stop, req.seed)
    include_usage = bool(req.stream and (req.stream_options or {}).get("include_usage"))
    return Job(served, ids, params, req.n, stops, req.stream, include_usage)


# --- the app ------------------------------------------------------------------------------------


def create_app(models: ModelSet, *, api_key: str | None = None, limits: Limits | None = None,
               max_batch: int = 16, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> FastAPI:
    """The FastAPI app; its lifespan starts and stops the batcher (app.state.batcher)."""
    limits = replace(limits or Limits())
    limits.max_n = min(limits.max_n, max_batch)  # the n choices of a request are generated in one batch
    batcher = Batcher(models.model, models.pad_id, models.activate, max_batch=max_batch, log=log)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()  # requests still running get an error event; nothing waits forever

    async def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not (given.startswith("Bearer ") and secrets.compare_digest(given[7:].encode(), api_key.encode())):
            raise ApiError(401, "missing or wrong API key; send the header 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    app = FastAPI(title="dianjing", lifespan=lifespan, dependencies=[Depends(check_key)],
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.models, app.state.limits = batcher, models, limits

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(ApiError(e.status_code, str(e.detail)).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        return JSONResponse(ApiError(500, f"internal error ({type(e).__name__}); see the server log").body(),
                            status_code=500)

    async def read(request: Request, schema: type[BaseModel]):
        if int(request.headers.get("content-length") or 0) > limits.max_body_bytes:
            raise ApiError(413, f"the request body is larger than {limits.max_body_bytes} bytes",
                           code="request_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                raise ApiError(413, f"the request body is larger than {limits.max_body_bytes} bytes",
                               code="request_too_large")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
        try:
            req = schema.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            param = ".".join(str(x) for x in err["loc"])
            raise ApiError(400, f"{param}: {err['msg']}", param=param) from None
        _unsupported(req)
        return req

    def pick(name: str | None) -> Served:
        if name is None:
            if len(models.served) == 1:
                return next(iter(models.served.values()))
            raise ApiError(400, f"say which model: one of {', '.join(models.served)}", param="model")
        if name not in models.served:
            raise ApiError(404, f"the model '{name}' does not exist; this server has {', '.join(models.served)}",
                           param="model", code="model_not_found")
        return models.served[name]

    def check_room() -> None:
        if batcher.waiting() >= limits.max_waiting:
            raise ApiError(429, f"{batcher.waiting()} requests are already waiting; retry later",
                           type="rate_limit_error", code="server_busy")

    def start(job: Job) -> tuple[GenRequest, asyncio.Queue]:
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        req = GenRequest(job.ids, job.params, job.served.name, job.served.tokenizer, job.served.eos,
                         emit=lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev),
                         stops=job.stops, n=job.n)
        try:
            batcher.submit(req)
        except RuntimeError:
            raise ApiError(503, "the server is shutting down") from None
        return req, queue

    def usage(job: Job, tokens: list[int]) -> dict:
        return {"prompt_tokens": len(job.ids), "completion_tokens": sum(tokens),
                "total_tokens": len(job.ids) + sum(tokens)}

    async def collect(job: Job, request: Request) -> tuple[list[str], list[str], list[int]]:
        """Wait for all choices of a non-streaming request; cancel it if the client goes away."""
        req, queue = start(job)
        texts, reasons, tokens = [""] * job.n, ["stop"] * job.n, [0] * job.n
        done, checked = 0, time.monotonic()
        try:
            while done < job.n:
                try:
                    ev = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    ev = None
                if time.monotonic() - checked > 1.0:
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        break
                if ev is None:
                    continue
                if ev[0] == "text":
                    texts[ev[1]] += ev[2]
                elif ev[0] == "done":
                    reasons[ev[1]], tokens[ev[1]] = ev[2], ev[3]
                    done += 1
                else:
                    raise ApiError(ev[2], ev[1])
        finally:
            if done < job.n:
                batcher.cancel(req)
        return texts, reasons, tokens

    async def sse(job: Job, chunk: Callable[[int, str | None, str | None], dict], first: Callable[[int], dict] | None,
                  strip: bool) -> AsyncIterator[str]:
        """Server-sent events: a chunk per piece, a last chunk per choice, usage if asked, [DONE]."""
        try:  # submitted here, not before: a generator that never starts must not leave a request behind
            req, queue = start(job)
        except ApiError as e:
            yield _event(e.body())
            yield "data: [DONE]\n\n"
            return
        done, tokens, started = 0, [0] * job.n, [not strip] * job.n
        try:
            if first is not None:
                for i in range(job.n):
                    yield _event(first(i))
            while done < job.n:
                ev = await queue.get()
                if ev[0] == "text":
                    piece = ev[2]
                    if not started[ev[1]]:  # "AI: answer": the space belongs to the template
                        piece = piece.lstrip()
                        started[ev[1]] = bool(piece)
                    if piece:
                        yield _event(chunk(ev[1], piece, None))
                elif ev[0] == "done":
                    tokens[ev[1]] = ev[3]
                    done += 1
                    yield _event(chunk(ev[1], None, ev[2]))
                else:
                    yield _event(ApiError(ev[2], ev[1]).body())
                    break
            if done == job.n and job.include_usage:
                yield _event({**chunk(0, None, None), "choices": [], "usage": usage(job, tokens)})
            yield "data: [DONE]\n\n"
        finally:  # also when the client disconnects: Starlette cancels this generator
            if done < job.n:
                batcher.cancel(req)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = await read(request, ChatRequest)
        served = pick(req.model)
        messages = _messages(req.messages, limits.max_messages)
        try:
            ids = prompt_ids(served.tokenizer, served.template, messages)
        except Exception as e:  # the template refuses the conversation, e.g. roles that do not alternate
            raise ApiError(400, f"the chat template of '{served.name}' cannot render these messages: {e}",
                           param="messages") from None
        job = _job(req, served, ids, served.template.stop_strings, models.context_length, limits,
                   req.max_completion_tokens or req.max_tokens)
        rid, name = f"chatcmpl-{uuid.uuid4().hex[:24]}", served.name
        base = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": name,
                "system_fingerprint": None}
        extra = {"usage": None} if job.include_usage else {}

        def chunk(i: int, piece: str | None, reason: str | None) -> dict:
            delta = {} if piece is None else {"content": piece}
            return {**base, "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": reason}],
                    **extra}

        def first(i: int) -> dict:
            return {**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}], **extra}

        check_room()
        if job.stream:
            return StreamingResponse(sse(job, chunk, first, strip=True), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        texts, reasons, tokens = await collect(job, request)
        return {"id": rid, "object": "chat.completion", "created": base["created"], "model": name,
                "system_fingerprint": None,
                "choices": [{"index": i, "message": {"role": "assistant", "content": t.lstrip()},
                             "logprobs": None, "finish_reason": r} for i, (t, r) in enumerate(zip(texts, reasons))],
                "usage": usage(job, tokens)}

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await read(request, CompletionRequest)
        served = pick(req.model)
        prompt = req.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ApiError(400, "send one prompt per request", param="prompt")
            prompt = prompt[0]
        ids = served.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        job = _job(req, served, ids, (), models.context_length, limits, req.max_tokens)
        rid, name = f"cmpl-{uuid.uuid4().hex[:24]}", served.name
        base = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": name}
        extra = {"usage": None} if job.include_usage else {}

        def chunk(i: int, piece: str | None, reason: str | None) -> dict:
            return {**base, "choices": [{"index": i, "text": piece or "", "logprobs": None,
                                         "finish_reason": reason}], **extra}

        check_room()
        if job.stream:
            return StreamingResponse(sse(job, chunk, None, strip=False), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        texts, reasons, tokens = await collect(job, request)
        return {**base, "choices": [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
                                    for i, (t, r) in enumerate(zip(texts, reasons))],
                "usage": usage(job, tokens)}

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "dianjing"}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card(n) for n in models.served]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str):
        return model_card(pick(name).name)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(models.served), "waiting": batcher.waiting(),
                "running": batcher.running(), **batcher.stats}

    return app


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _event(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
