"""Teachers: any OpenAI-compatible server over HTTP, or a local transformers model.

Both answer `ask(name, prompt)` and go through the request journal first, so a request made
before (in this run or one that was killed) is answered from the journal without being sent.
The HTTP teacher sends to one server or spreads requests over several (`base_url` a list: a
server whose request fails is taken out for `endpoint_cooldown_s` and the request goes to
another at once), runs up to `max_concurrency` requests at once per server, gives each attempt
`timeout_s`, retries 429s, 5xx, timeouts, connection errors and malformed bodies with
exponential back-off (or the server's Retry-After, during which every request waits), keeps
to `tokens_per_minute` if set, and stops at once on other 4xx: those will not get better by
retrying (a wrong key, URL or model).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dianjing.errors import DianjingError
from dianjing.teacher.settings import TeacherSettings
from dianjing.teacher.store import Journal, now_iso

RETRY_STATUS = frozenset({408, 409, 425, 429})


class TeacherError(DianjingError):
    """The teacher refused in a way retrying cannot fix (4xx other than 408/409/425/429)."""

    def __init__(self, message: str, *, status: int | None = None, fix: str | None = None):
        super().__init__(message, fix=fix)
        self.status = status


class RequestFailed(Exception):
    """A request that still failed after all its retries."""

    def __init__(self, name: str, attempts: int, cause: str, detail: str = ""):
        self.name, self.attempts, self.cause, self.detail = name, attempts, cause, detail
        super().__init__(f"{name}: {attempts} attempts failed, the last with {cause}"
                         + (f" ({detail})" if detail else ""))


@dataclass
class Reply:
    text: str
    finish_reason: str | None
    key: str  # the journal key: which request got this reply (provenance request_id)
    time: str
    usage: dict
    cached: bool  # from the journal: not sent again


@dataclass
class RunStats:
    """What happened in this process (the report adds up the journal over all runs)."""

    sent: int = 0  # HTTP attempts (or local generations)
    replies: int = 0
    cached: int = 0
    retries: int = 0
    failures: Counter = field(default_factory=Counter)


def request_key(name: str, body: dict) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"{name}#{digest[:12]}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def extract(data: dict, api: str) -> tuple[str, str | None, dict]:
    """Text, finish_reason and usage of an OpenAI-style response; KeyError/TypeError/IndexError if it is not one."""
    choice = data["choices"][0]
    if api == "chat":
        content = choice["message"]["content"]
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        text = content or ""
    else:
        text = choice["text"]
    if not isinstance(text, str):
        raise TypeError("reply text is not a string")
    return text, choice.get("finish_reason"), data.get("usage") or {}


class TokenBudget:
    """At most `per_minute` tokens a minute: a bucket that refills continuously, starting full.

    A request takes its estimate (prompt bytes / 4 + max_tokens, as providers' rate limiters
    count max_tokens up front) before it is sent and gives back what the reply did not use.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable] = asyncio.sleep):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.clock, self.sleep = clock, sleep
        self.t = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    async def take(self, n: int) -> float:
        n = min(float(n), self.capacity)  # a request larger than a minute's budget waits for a full bucket
        async with self._lock:  # first come, first served
            self._refill()
            while self.level < n:
                await self.sleep((n - self.level) / self.rate)
                self._refill()
            self.level -= n
        return n

    def settle(self, taken: float, used: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + taken - used)


class Teacher:
    """The journal lookup and the request body; subclasses send."""

    url: str
    model: str
    capacity: int = 1  # requests worth sending at once

    def __init__(self, settings: TeacherSettings, journal: Journal, log: Callable[[str], None]):
        self.s, self.journal, self.log = settings, journal, log
        self.stats = RunStats()

    def endpoint_stats(self) -> list[dict]:
        """Per endpoint: attempts, replies, failed attempts, times taken out (an HTTP teacher's)."""
        return []

    def body(self, prompt: str, stop: list[str] | None, system: str | None = None) -> dict:
        s = self.s
        body: dict = {"model": self.model}
        if s.api == "chat":
            body["messages"] = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
        else:
            body["prompt"] = f"{system}\n\n{prompt}" if system else prompt
        body.update(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, n=1)
        if stop:
            body["stop"] = stop
        return body

    async def ask(self, name: str, prompt: str, stop: list[str] | None = None, system: str | None = None) -> Reply:
        """The reply to `prompt` (after a `system` message, if given); `name` says which request this is."""
        body = self.body(prompt, stop, system)
        key = request_key(name, body)
        entry = self.journal.reply(key)
        cached = entry is not None
        if cached:
            self.stats.cached += 1
        else:
            entry = await self._fetch(name, key, body)
            self.journal.append(entry)
            self.stats.replies += 1
        text, finish, usage = extract(entry["response"], self.s.api)
        return Reply(text, finish, key, entry["time"], usage, cached)

    async def _fetch(self, name: str, key: str, body: dict) -> dict:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


@dataclass
class Endpoint:
    """One server of an HTTP teacher (teacher.base_url may list several serving the same model)."""

    url: str  # the API root
    post: str  # where requests go: url + /chat/completions or /completions
    in_flight: int = 0
    sent: int = 0
    replies: int = 0
    failures: int = 0
    taken_out: int = 0  # times it was taken out after a failure
    down_until: float = 0.0  # taken out until then (time.monotonic)
    paused_until: float = 0.0  # the server's Retry-After

    def ready_at(self) -> float:
        return max(self.down_until, self.paused_until)

    def stats(self) -> dict:
        return {"url": self.url, "attempts": self.sent, "replies": self.replies, "failed_attempts": self.failures,
                "taken_out": self.taken_out}


class HttpTeacher(Teacher):
    """Sends to one endpoint, or spreads requests over several: each request goes to the endpoint with the
    fewest requests in flight (up to max_concurrency each); one whose request fails is taken out for
    endpoint_cooldown_s and the request is retried on another at once (when all are out, on the first
    one back); after the cool-down it gets requests again. With one endpoint a failure waits for the
    exponential back-off instead. A Retry-After pauses the endpoint that sent it."""

    def __init__(self, settings: TeacherSettings, journal: Journal, log: Callable[[str], None],
                 sleep: Callable[[float], Awaitable] = asyncio.sleep):
        import httpx

        super().__init__(settings, journal, log)
        urls = settings.urls()
        self.url = ", ".join(urls)
        self.model = settings.model
        path = "/chat/completions" if settings.api == "chat" else "/completions"
        self.endpoints = [Endpoint(u, u + path) for u in urls]
        self._endpoint = self.endpoints[0].post  # named in refusals
        self.capacity = settings.max_concurrency * len(urls)
        self._http = httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=self.capacity))
        self._sem = asyncio.Semaphore(self.capacity)
        self._budget = TokenBudget(settings.tokens_per_minute) if settings.tokens_per_minute else None
        self._sleep = sleep
        self._rng = random.Random()

    def _headers(self) -> dict:
        key = os.environ.get(self.s.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _acquire(self) -> Endpoint:
        """The endpoint for the next attempt: among those not taken out or paused and with a free slot, the
        one with the fewest requests in flight; if none is ready, wait for the first that will be."""
        while True:
            now = time.monotonic()
            free = [e for e in self.endpoints if e.in_flight < self.s.max_concurrency]
            ready = [e for e in free if e.ready_at() <= now]
            if ready:
                e = min(ready, key=lambda e: (e.in_flight, e.sent))
                e.in_flight += 1
                e.sent += 1
                return e
            wait = min((e.ready_at() - now for e in free), default=0.05)
            await self._sleep(max(0.01, min(wait, 0.25)))

    def _others_ready(self, e: Endpoint) -> bool:
        now = time.monotonic()
        return any(o is not e and o.ready_at() <= now for o in self.endpoints)

    async def _attempt(self, e: Endpoint, body: dict, key: str, attempt: int) -> tuple[dict | None, str, str, float | None, int | None]:
        """One POST: (journal entry, "", "", None, 200) on success, else (None, cause, detail, Retry-After, status)."""
        import httpx

        t0 = time.monotonic()
        try:
            async with asyncio.timeout(self.s.timeout_s):
                resp = await self._http.post(e.post, json=body, headers=self._headers())
        except TimeoutError:
            return None, "timeout", f"no complete reply within timeout_s={self.s.timeout_s:g}s", None, None
        except httpx.TransportError as err:
            return None, "connection error", f"{type(err).__name__}: {err}"[:200], None, None
        status = resp.status_code
        if status == 200:
            try:
                data = resp.json()
                extract(data, self.s.api)
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
                return None, "malformed response", f"{type(err).__name__}: {resp.text[:120]!r}", None, status
            return ({"kind": "reply", "key": key, "time": now_iso(), "attempt": attempt, "url": e.url,
                     "latency_s": round(time.monotonic() - t0, 3), "request": body, "response": data},
                    "", "", None, status)
        if status in RETRY_STATUS or status >= 500:
            return None, f"HTTP {status}", _server_message(resp), parse_retry_after(resp.headers.get("retry-after")), \
                status
        raise self._refusal(status, resp, e)

    async def _fetch(self, name: str, key: str, body: dict) -> dict:
        estimate = len(json.dumps(body, ensure_ascii=False).encode()) // 4 + self.s.max_tokens
        async with self._sem:
            attempt = 0
            while True:
                attempt += 1
                e = await self._acquire()
                taken = await self._budget.take(estimate) if self._budget else 0.0
                self.stats.sent += 1
                try:
                    entry, cause, detail, hint, status = await self._attempt(e, body, key, attempt)
                finally:
                    e.in_flight -= 1
                if entry is not None:
                    if self._budget:
                        usage = entry["response"].get("usage")
                        used = usage.get("total_tokens") if isinstance(usage, dict) else None
                        self._budget.settle(taken, used if isinstance(used, (int, float)) else taken)
                    e.replies += 1
                    e.down_until = 0.0
                    return entry
                if self._budget:
                    self._budget.settle(taken, 0.0)
                e.failures += 1
                self.journal.append({"kind": "failure", "key": key, "time": now_iso(), "attempt": attempt,
                                     "cause": cause, "status": status, "url": e.url})
                self.stats.failures[cause] += 1
                if attempt > self.s.max_retries:
                    self.journal.append({"kind": "gave_up", "key": key, "time": now_iso(), "attempt": attempt})
                    raise RequestFailed(name, attempt, cause, detail)
                self.stats.retries += 1
                await self._wait_before_retry(e, name, attempt, cause, detail, hint)

    async def _wait_before_retry(self, e: Endpoint, name: str, attempt: int, cause: str, detail: str,
                                 hint: float | None) -> None:
        """Pause a failed endpoint (Retry-After) or take it out (several endpoints); one endpoint: back off."""
        now = time.monotonic()
        if hint is not None:  # the server asked everyone to wait
            e.paused_until = max(e.paused_until, now + min(hint, self.s.max_backoff_s))
        elif len(self.endpoints) > 1 and e.down_until <= now:
            e.down_until = now + self.s.endpoint_cooldown_s
            e.taken_out += 1
            self.log(f"endpoint {e.url} taken out for {self.s.endpoint_cooldown_s:g}s after {cause}"
                     + (f" ({detail})" if detail else "") + "; the others carry its requests")
        if len(self.endpoints) > 1:  # the next attempt goes to a ready endpoint, or waits for the first back
            delay = 0.0
            when = "on another endpoint" if self._others_ready(e) else \
                f"when an endpoint is back (in {min(o.ready_at() for o in self.endpoints) - now:.1f}s)"
        else:  # the server's Retry-After, or exponential with jitter so that clients that failed together spread out
            wait = hint if hint is not None else self.s.backoff_s * 2 ** (attempt - 1) * (0.5 + self._rng.random() / 2)
            delay = min(wait, self.s.max_backoff_s)
            when = f"in {delay:.1f}s"
        if self.stats.retries <= 10 or self.stats.retries % 100 == 0:
            self.log(f"retry {attempt}/{self.s.max_retries} of {name} {when}: {cause}"
                     + (f" ({detail})" if detail else "")
                     + ("" if self.stats.retries < 10 else f"; {self.stats.retries} retries so far"))
        if delay:
            await self._sleep(delay)

    def endpoint_stats(self) -> list[dict]:
        return [e.stats() for e in self.endpoints]

    def _refusal(self, status: int, resp, e: Endpoint) -> TeacherError:
        msg = f"the server at {e.post} answered HTTP {status}: {_server_message(resp)}"
        if status in (401, 403):
            have = "is set" if os.environ.get(self.s.api_key_env) else "is not set"
            return TeacherError(msg, status=status,
                                fix=f"check the API key: it is read from ${self.s.api_key_env} (which {have}); "
                                    "teacher.api_key_env names another variable")
        if status == 404:
            return TeacherError(msg, status=status,
                                fix=f"check teacher.base_url (the API root, usually ending in /v1), teacher.model "
                                    f"({self.model!r}; GET {e.url}/models lists the served ones) and "
                                    f"teacher.api ({self.s.api!r})")
        return TeacherError(msg, status=status,
                            fix="check the teacher settings the server names (model, max_tokens, temperature, "
                                "api: chat or completions); a prompt too long for the model's context needs "
                                "fewer examples (generate.seed_examples, generate.instance_demos) or a smaller "
                                "teacher.max_tokens")

    async def aclose(self) -> None:
        await self._http.aclose()


def _server_message(resp) -> str:
    try:
        err = resp.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)[:300]
    except (ValueError, AttributeError):
        pass
    return (resp.text or "").strip()[:300] or "(empty body)"


class LocalTeacher(Teacher):
    """A transformers model in this process (teacher.local_model): one generation at a time."""

    def __init__(self, settings: TeacherSettings, journal: Journal, log: Callable[[str], None]):
        super().__init__(settings, journal, log)
        self.url = f"local:{settings.local_model}"
        self.model = settings.local_model
        self._lock = asyncio.Lock()
        self._loaded = None

    def _generate(self, key: str, body: dict) -> dict:
        from dianjing.infer.generate import SamplingParams, complete, stream
        from dianjing.infer.load import load_run

        if self._loaded is None:
            self.log(f"loading the local teacher {self.model}")
            self._loaded = load_run(self.model, self.s.precision, log=self.log, device=self.s.device)
        model, tok, template = self._loaded
        seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)  # the same request samples the same way
        params = SamplingParams(body["max_tokens"], body["temperature"], body["top_p"], list(body.get("stop") or []),
                                seed)
        t0 = time.monotonic()
        if "messages" in body:
            prompt_n = len(tok(template.render(body["messages"], add_generation_prompt=True),
                               add_special_tokens=False)["input_ids"])
            text = complete(model, tok, template, body["messages"], params)
            message = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
        else:
            ids = tok(body["prompt"], add_special_tokens=False)["input_ids"]
            prompt_n = len(ids)
            text = "".join(stream(model, tok, ids, params))
            message = {"choices": [{"index": 0, "text": text}]}
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        message["choices"][0]["finish_reason"] = "length" if n >= params.max_new_tokens else "stop"
        message.update(id=f"local-{key}", model=self.model,
                       usage={"prompt_tokens": prompt_n, "completion_tokens": n, "total_tokens": prompt_n + n})
        return {"kind": "reply", "key": key, "time": now_iso(), "attempt": 1,
                "latency_s": round(time.monotonic() - t0, 3), "request": body, "response": message}

    async def _fetch(self, name: str, key: str, body: dict) -> dict:
        async with self._lock:
            self.stats.sent += 1
            return await asyncio.to_thread(self._generate, key, body)


def make_teacher(settings: TeacherSettings, journal: Journal, log: Callable[[str], None]) -> Teacher:
    if settings.urls():
        return HttpTeacher(settings, journal, log)
    return LocalTeacher(settings, journal, log)
