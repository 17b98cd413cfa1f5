"""An OpenAI-compatible HTTP server for runs and models (`dianjing serve`).

POST /v1/chat/completions and /v1/completions (both can stream as server-sent events),
GET /v1/models and /health. One base model is loaded once; the LoRA-family adapters of
several runs sit on it as named PEFT adapters, and a request's `model` field picks one by
run-folder name, or "base" for the bare model. Prompts are rendered with the chat template
each run was trained with, tools included; calls in the answer come back as `tool_calls`
(infer/tool_calls.py). Generation runs in one worker thread (`batcher.Batcher`) that
batches concurrent requests; its events reach each request through an asyncio queue.

A request goes: `Guard` (Host, Origin, content type) → key check → the body, read with a
size and a time limit → `api.parse` and `api.*_job` in a worker thread (JSON, depth, UTF-8,
strict types, template, tokenizer, length bounds: CPU work never runs on the event loop) →
`Batcher.submit`, which checks the waiting-queue limit in the same step → the answer, whole
or streamed. Every error is an OpenAI-style object, {"error": {"message", "type", "param",
"code"}}: 4xx for a bad request, 5xx with a generic message (details only in the server log).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dianjing.infer.api import ApiError, ChatRequest, CompletionRequest, Job, Limits, chat_job, completion_job, parse
from dianjing.infer.batcher import Batcher, Done, Failed, GenRequest, Refused, Text
from dianjing.infer.models import ModelSet, Served
from dianjing.infer.generate import AnswerStart
from dianjing.infer.tool_calls import ToolDeltas, answer

__all__ = ["ApiError", "Limits", "Server", "create_app"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
LIVENESS_CHECK_S = 1.0  # how often a waiting request checks its client and the worker


@dataclass
class State:
    """What the handlers share (app.state.serve)."""

    models: ModelSet
    batcher: Batcher
    limits: Limits
    api_key: str | None
    log: Callable[[str], None]
    created: int


def create_app(models: ModelSet, *, api_key: str | None = None, limits: Limits | None = None,
               max_batch: int = 16, loopback: bool = True, cors_origins: tuple[str, ...] = (),
               log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> FastAPI:
    """The FastAPI app; its lifespan starts and stops the batcher (app.state.batcher).

    `loopback`: the server listens on a loopback address, so only loopback Host headers are
    served (a web page cannot reach it through DNS rebinding). `cors_origins`: browser origins
    allowed to call the API (a chat UI); requests from any other origin are refused.
    """
    limits = replace(limits or Limits())
    limits.max_n = min(limits.max_n, max_batch)  # the n choices of a request are generated in one batch
    batcher = Batcher(models.model, models.pad_id, models.activate, max_batch=max_batch, log=log)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()  # requests still running get an error event; nothing waits forever

    app = FastAPI(title="dianjing", lifespan=lifespan, dependencies=[Depends(check_key)],
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = State(models, batcher, limits, api_key, log, int(time.time()))
    app.state.batcher, app.state.models, app.state.limits = batcher, models, limits
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
    app.post("/v1/chat/completions")(chat_completions)
    app.post("/v1/completions")(completions)
    app.get("/v1/models")(list_models)
    app.get("/v1/models/{name}")(get_model)
    app.get("/health")(health)
    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, loopback=loopback, cors_origins=tuple(cors_origins))  # outermost
    return app


# --- browser safety -------------------------------------------------------------------------------


class Guard:
    """Refuses what only a web page would send, before anything else runs (an ASGI middleware).

    A page the user visits can make the browser POST to http://127.0.0.1:PORT without a
    preflight if the body is text/plain, and through DNS rebinding it can even read the
    answer (its own host name then resolves to 127.0.0.1, and the Host header names it). So:
    on loopback only loopback Host headers; a request with an Origin header only from an
    origin given with --cors-origin; POST bodies only as application/json (which a page cannot
    send cross-origin without a preflight this server does not grant).
    """

    def __init__(self, app, *, loopback: bool, cors_origins: tuple[str, ...]):
        self.app, self.loopback, self.origins = app, loopback, cors_origins

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self.check(scope)
            if refusal is not None:
                await JSONResponse(refusal.body(), status_code=refusal.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, scope) -> ApiError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.loopback and _hostname(headers.get("host", "")) not in LOOPBACK_HOSTS:
            return ApiError(403, "this server listens on loopback and serves only requests addressed to "
                                 "127.0.0.1, localhost or [::1]", code="forbidden_host")
        origin = headers.get("origin")
        if origin is not None and "*" not in self.origins and origin not in self.origins:
            return ApiError(403, "requests from web pages are refused unless their origin is allowed "
                                 "(start the server with --cors-origin ORIGIN)", code="forbidden_origin")
        if scope["method"] == "POST":
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return ApiError(415, "send the body as JSON with the header 'Content-Type: application/json'",
                                code="unsupported_media_type")
        return None


def _hostname(host: str) -> str:
    """The name in a Host header, without the port: '127.0.0.1:8000' → '127.0.0.1', '[::1]:80' → '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


# --- errors ---------------------------------------------------------------------------------------


async def check_key(request: Request) -> None:
    key = request.app.state.serve.api_key
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if not (scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), key.encode())):
        raise ApiError(401, "missing or wrong API key; send the header 'Authorization: Bearer KEY'",
                       code="invalid_api_key")


def _error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def api_error(request: Request, e: ApiError) -> JSONResponse:
    return _error_response(e)


async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    return _error_response(ApiError(e.status_code, str(e.detail)))


async def internal_error(request: Request, e: Exception) -> JSONResponse:
    ref = uuid.uuid4().hex[:12]
    request.app.state.serve.log(f"internal error {ref} on {request.method} {request.url.path}:\n"
                                + "".join(traceback.format_exception(e)))
    return _error_response(ApiError(500, f"internal error (reference {ref}); the server log has the details"))


# --- reading a request ----------------------------------------------------------------------------


async def _body(request: Request, limits: Limits) -> bytes:
    """The raw body, within the size limit and the time limit (a client that sends slowly is cut off)."""
    too_large = ApiError(413, f"the request body is larger than {limits.max_body_bytes} bytes",
                         code="request_too_large")
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise ApiError(400, "the Content-Length header is not a number") from None
    if declared > limits.max_body_bytes:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(limits.body_timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limits.max_body_bytes:
                    raise too_large
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {limits.body_timeout:g} s",
                       code="request_timeout") from None
    return bytes(body)


def _pick(models: ModelSet, name: str | None) -> Served:
    if name is None:
        if len(models.served) == 1:
            return next(iter(models.served.values()))
        raise ApiError(400, f"say which model: one of {', '.join(models.served)}", param="model")
    if name not in models.served:
        raise ApiError(404, f"the model '{name[:100]}' does not exist; this server has {', '.join(models.served)}",
                       param="model", code="model_not_found")
    return models.served[name]


async def _job(request: Request, schema, build) -> tuple[State, Job]:
    """Read, parse and prepare a request; the CPU work (JSON, template, tokenizer) runs in a thread."""
    st: State = request.app.state.serve
    body = await _body(request, st.limits)

    def prepare() -> Job:
        req = parse(body, schema, st.limits)
        return build(req, _pick(st.models, req.model), st.models.context_length, st.limits)

    return st, await asyncio.to_thread(prepare)


def _submit(st: State, job: Job) -> tuple[GenRequest, asyncio.Queue]:
    """Hand the job to the batcher now (so admission is exact), with a queue for its events."""
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()
    req = GenRequest(job.ids, job.params, job.served.name, job.served.tokenizer, job.served.eos,
                     emit=lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev), stops=job.stops, n=job.n)
    try:
        st.batcher.submit(req, st.limits.max_waiting)
    except Refused as e:
        if e.status == 429:
            raise ApiError(429, e.message, type="rate_limit_error", code="server_busy",
                           headers={"Retry-After": "1"}) from None
        raise ApiError(503, e.message, code="unavailable") from None
    return req, queue


async def _events(st: State, req: GenRequest, queue: asyncio.Queue,
                  disconnected: Callable[[], object] | None = None) -> AsyncIterator[Text | Done | Failed]:
    """The request's events until it ends; checks every second that the worker lives (and, for
    a non-streaming request, that the client is still there: a stream learns that from Starlette)."""
    n_done, checked = 0, time.monotonic()
    while n_done < req.n:
        try:
            ev = await asyncio.wait_for(queue.get(), timeout=LIVENESS_CHECK_S)
        except TimeoutError:
            ev = None
        if time.monotonic() - checked >= LIVENESS_CHECK_S:  # also while tokens keep coming
            checked = time.monotonic()
            if disconnected is not None and await disconnected():
                return
        if ev is None:
            if not st.batcher.alive and queue.empty():
                yield Failed(st.batcher.down_reason or "the generation worker stopped", 503)
                return
            continue
        yield ev
        if isinstance(ev, Failed):
            return
        n_done += isinstance(ev, Done)


class _Stream(StreamingResponse):
    """A streamed answer that cancels its request however the response ends, even if the body
    is never sent (the client left before the first byte)."""

    def __init__(self, content, *, on_close: Callable[[], None]):
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


# --- the handlers ---------------------------------------------------------------------------------


def _usage(job: Job, tokens: list[int]) -> dict:
    return {"prompt_tokens": len(job.ids), "completion_tokens": sum(tokens), "total_tokens": len(job.ids) + sum(tokens)}


async def _collect(st: State, job: Job, request: Request) -> tuple[list[str], list[str], list[int]]:
    """All choices of a non-streaming request (each starting with the pre-filled opening, if any);
    it is cancelled if the client goes away."""
    req, queue = _submit(st, job)
    reasons, tokens = ["stop"] * job.n, [0] * job.n
    starts = [AnswerStart() if job.strip_start else (lambda p: p) for _ in range(job.n)]
    texts = [start(job.opening) for start in starts]
    try:
        async for ev in _events(st, req, queue, request.is_disconnected):
            if isinstance(ev, Text):
                texts[ev.index] += starts[ev.index](ev.piece)
            elif isinstance(ev, Done):
                reasons[ev.index], tokens[ev.index] = ev.reason, ev.tokens
            else:
                raise ApiError(ev.status, ev.message)
    finally:
        st.batcher.cancel(req)  # a no-op once the request has finished
    return texts, reasons, tokens


class _Pieces:
    """One streamed choice: its text as it comes (`wrap`ped: a chat delta or completion text), without
    the whitespace a chat answer starts with; with tools, read for calls (`tool_calls.ToolDeltas`)."""

    def __init__(self, job: Job, wrap: Callable[[str], object]):
        self.start = AnswerStart() if job.strip_start else (lambda p: p)
        self.tools = ToolDeltas(job.served.template, job.tools) if job.tools is not None else None
        self.wrap = wrap

    def push(self, piece: str) -> list:
        piece = self.start(piece)
        if self.tools is not None:
            return self.tools.push(piece)
        return [self.wrap(piece)] if piece else []

    def finish(self) -> list:
        return self.tools.finish() if self.tools is not None else []

    def reason(self, reason: str) -> str:
        return self.tools.reason(reason) if self.tools is not None else reason


async def _sse(st: State, job: Job, req: GenRequest, queue: asyncio.Queue,
               chunk: Callable[[int, object, str | None], dict], first: Callable[[int], dict] | None,
               wrap: Callable[[str], object]) -> AsyncIterator[str]:
    """Server-sent events: a chunk per piece, a last chunk per choice, usage if asked, then [DONE];
    a failure (also at shutdown) is an error event, and [DONE] still follows."""
    tokens, done = [0] * job.n, 0
    pieces = [_Pieces(job, wrap) for _ in range(job.n)]
    for i in range(job.n):
        if first is not None:
            yield _event(first(i))
        for payload in pieces[i].push(job.opening):
            yield _event(chunk(i, payload, None))
    async for ev in _events(st, req, queue):
        if isinstance(ev, Text):
            for payload in pieces[ev.index].push(ev.piece):
                yield _event(chunk(ev.index, payload, None))
        elif isinstance(ev, Done):
            tokens[ev.index], done = ev.tokens, done + 1
            for payload in pieces[ev.index].finish():
                yield _event(chunk(ev.index, payload, None))
            yield _event(chunk(ev.index, None, pieces[ev.index].reason(ev.reason)))
        else:
            yield _event(ApiError(ev.status, ev.message).body())
    if done == job.n and job.include_usage:
        yield _event({**chunk(0, None, None), "choices": [], "usage": _usage(job, tokens)})
    yield "data: [DONE]\n\n"


def _stream(st: State, job: Job, chunk, first, wrap) -> _Stream:
    req, queue = _submit(st, job)
    return _Stream(_sse(st, job, req, queue, chunk, first, wrap), on_close=lambda: st.batcher.cancel(req))


def _chat_choice(job: Job, i: int, text: str, reason: str) -> dict:
    """A whole chat answer; with tools, its calls read back into message.tool_calls."""
    message: dict = {"role": "assistant", "content": text}
    if job.tools is not None:
        message["content"], calls = answer(text, job.served.template, job.tools)
        if calls:
            message["tool_calls"], reason = calls, "tool_calls"
    return {"index": i, "message": message, "logprobs": None, "finish_reason": reason}


async def chat_completions(request: Request):
    st, job = await _job(request, ChatRequest, chat_job)
    rid, name = f"chatcmpl-{uuid.uuid4().hex[:24]}", job.served.name
    base = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": name,
            "system_fingerprint": None}
    extra = {"usage": None} if job.include_usage else {}

    def chunk(i: int, delta: dict | None, reason: str | None) -> dict:
        return {**base, "choices": [{"index": i, "delta": delta or {}, "logprobs": None, "finish_reason": reason}],
                **extra}

    def first(i: int) -> dict:
        return {**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                     "finish_reason": None}], **extra}

    if job.stream:
        return _stream(st, job, chunk, first, lambda piece: {"content": piece})
    texts, reasons, tokens = await _collect(st, job, request)
    return {"id": rid, "object": "chat.completion", "created": base["created"], "model": name,
            "system_fingerprint": None,
            "choices": [_chat_choice(job, i, t, r) for i, (t, r) in enumerate(zip(texts, reasons))],
            "usage": _usage(job, tokens)}


async def completions(request: Request):
    st, job = await _job(request, CompletionRequest, completion_job)
    base = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
            "model": job.served.name}
    extra = {"usage": None} if job.include_usage else {}

    def chunk(i: int, piece: str | None, reason: str | None) -> dict:
        return {**base, "choices": [{"index": i, "text": piece or "", "logprobs": None, "finish_reason": reason}],
                **extra}

    if job.stream:
        return _stream(st, job, chunk, None, lambda piece: piece)
    texts, reasons, tokens = await _collect(st, job, request)
    return {**base, "choices": [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
                                for i, (t, r) in enumerate(zip(texts, reasons))],
            "usage": _usage(job, tokens)}


def _model_card(st: State, name: str) -> dict:
    return {"id": name, "object": "model", "created": st.created, "owned_by": "dianjing"}


async def list_models(request: Request):
    st: State = request.app.state.serve
    return {"object": "list", "data": [_model_card(st, n) for n in st.models.served]}


async def get_model(request: Request, name: str):
    st: State = request.app.state.serve
    return _model_card(st, _pick(st.models, name).name)


async def health(request: Request):
    """200 while the worker takes requests; 503 once it has stopped or the server is shutting down."""
    st: State = request.app.state.serve
    b = st.batcher
    body = {"status": "ok" if b.alive else "unavailable", "models": list(st.models.served), "waiting": b.waiting(),
            "running": b.running(), **b.stats}
    if not b.alive:
        body["reason"] = b.down_reason
        return JSONResponse(body, status_code=503)
    return body


def _event(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


# --- running it -----------------------------------------------------------------------------------


class Server:
    """uvicorn with dianjing's shutdown: on SIGTERM / Ctrl-C stop accepting, give running and
    waiting requests `grace` seconds, then stop the batcher, so every open stream gets an error
    event and [DONE] and every waiting request a 503 (instead of uvicorn cutting connections);
    the process then exits normally (uvicorn would re-raise the signal)."""

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, grace: float = 30.0,
                 log_level: str = "info"):
        import uvicorn

        batcher: Batcher = app.state.batcher

        class _Uvicorn(uvicorn.Server):
            async def shutdown(self, sockets=None):
                async def stop_after_grace():
                    await asyncio.sleep(grace)
                    await asyncio.to_thread(batcher.stop)

                stopper = asyncio.create_task(stop_after_grace())
                try:
                    await super().shutdown(sockets)
                finally:
                    stopper.cancel()

            @contextlib.contextmanager
            def capture_signals(self):
                with super().capture_signals():
                    yield
                    self._captured_signals.clear()  # handled: exit 0, do not re-raise

        # uvicorn's own deadline only backs ours up: after it, it cancels whatever still runs
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                timeout_graceful_shutdown=grace + 10)
        self.uvicorn = _Uvicorn(config)

    def run(self, sockets=None) -> None:
        self.uvicorn.run(sockets=sockets)
