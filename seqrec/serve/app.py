"""The HTTP service (FastAPI): recommend, batch recommend, events, similar items, health, metrics.

Limits (history length, k, batch size, body bytes) come from `ServeSettings` and show up in the
OpenAPI schema at /docs. Errors are JSON `{"detail": ...}` with the status that names the case:
404 unknown user/item, 401 missing/wrong token, 413 body too large, 422 invalid request.
"""

# no `from __future__ import annotations`: FastAPI must resolve the request models defined in create_app

import asyncio
import hmac
import math
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from seqrec.errors import SeqrecError, UnknownItemError, UnknownUserError
from seqrec.serve.engine import Engine, Result
from seqrec.serve.engine import Query as EngineQuery

Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]


@dataclass
class ServeSettings:
    max_history: int = 1000  # items in an explicit history
    max_k: int = 1000
    max_batch: int = 256  # requests per /recommend/batch, events per /events
    max_exclude: int = 10_000
    max_body_bytes: int = 1_000_000
    token: str | None = None  # bearer token for /events (and reads with protect_reads)
    writes: bool = True  # False: /events is not offered at all
    protect_reads: bool = False
    insecure_writes: bool = False  # allow writes without a token (explicit opt-in only)

    def check(self) -> None:
        if self.writes and not self.token and not self.insecure_writes:
            raise SeqrecError("writes (/events) are enabled but no token is set: export SEQREC_TOKEN=<secret> or pass "
                              "--token-file FILE; or --read-only to disable /events, or --insecure-writes to accept "
                              "unauthenticated writes on purpose")
        if self.protect_reads and not self.token:
            raise SeqrecError("--protect-reads needs a token: export SEQREC_TOKEN=<secret> or pass --token-file FILE")
        for name in ("max_history", "max_k", "max_batch", "max_exclude", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise SeqrecError(f"{name} must be at least 1, got {getattr(self, name)}")


# --- metrics (Prometheus text format, hand-rolled: a counter and a histogram) -----------------

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.hist: dict[tuple[str, str], list] = {}  # (method, path) -> [bucket counts, sum, count]
        self.gauges: dict[str, tuple[str, float]] = {}

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, path, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            h = self.hist.setdefault((method, path), [[0] * len(BUCKETS), 0.0, 0])
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    h[0][i] += 1
            h[1] += seconds
            h[2] += 1

    def render(self) -> str:
        def lbl(**kv) -> str:
            return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in kv.items()) + "}"

        lines = ["# HELP seqrec_requests_total HTTP requests by method, route and status.",
                 "# TYPE seqrec_requests_total counter"]
        with self._lock:
            for (m, p, s), n in sorted(self.requests.items()):
                lines.append(f"seqrec_requests_total{lbl(method=m, path=p, status=s)} {n}")
            lines += ["# HELP seqrec_request_duration_seconds Time from request start to response end.",
                      "# TYPE seqrec_request_duration_seconds histogram"]
            for (m, p), (counts, total, n) in sorted(self.hist.items()):
                for b, c in zip(BUCKETS, counts, strict=True):
                    lines.append(f"seqrec_request_duration_seconds_bucket{lbl(method=m, path=p, le=b)} {c}")
                lines.append(f"seqrec_request_duration_seconds_bucket{lbl(method=m, path=p, le='+Inf')} {n}")
                lines.append(f"seqrec_request_duration_seconds_sum{lbl(method=m, path=p)} {total:.6f}")
                lines.append(f"seqrec_request_duration_seconds_count{lbl(method=m, path=p)} {n}")
            for name, (help_text, value) in sorted(self.gauges.items()):
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than {limit} bytes; send fewer items per request "
                              "(or raise --max-body-bytes)")


class ServiceMiddleware:
    """Pure ASGI: rejects oversize bodies (declared or streamed) and records request metrics."""

    def __init__(self, app, metrics: Metrics, max_body_bytes: int):
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            headers = dict(scope.get("headers") or [])
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if scope.get("method") == "POST" and ctype in (b"", b"application/x-www-form-urlencoded"):
                # every body here is JSON; a bare `curl -d '{...}'` labels it as a form, so relabel it
                scope = dict(scope)
                scope["headers"] = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
                scope["headers"].append((b"content-type", b"application/json"))
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                err = BodyTooLarge(self.max_body)
                await JSONResponse({"detail": err.detail}, status_code=413)(scope, receive, send_wrapper)
                return
            seen = [0]

            async def limited_receive():
                message = await receive()
                if message["type"] == "http.request":
                    seen[0] += len(message.get("body", b""))
                    if seen[0] > self.max_body:
                        raise BodyTooLarge(self.max_body)
                return message

            await self.app(scope, limited_receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "<unmatched>"
            self.metrics.observe(scope.get("method", "?"), path, status[0], time.perf_counter() - start)


class MicroBatcher:
    """Runs concurrent /recommend calls as one model call, without ever waiting to fill a batch.

    While a batch is being scored (on a worker thread), new requests queue up; the next batch takes
    everything queued, up to `max_batch`. A lone request therefore goes straight through, and under
    load the per-request model cost falls with the batch size instead of requests contending for
    the cores one by one.
    """

    def __init__(self, engine: Engine, max_batch: int):
        self.engine = engine
        self.max_batch = max_batch
        self.queue: asyncio.Queue | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.batched_requests = 0

    async def submit(self, query: EngineQuery, k: int) -> Result:
        loop = asyncio.get_running_loop()
        if self.queue is None or self.loop is not loop:  # first call, or a new loop (test clients)
            self.queue, self.loop = asyncio.Queue(), loop
            self._task = loop.create_task(self._run(self.queue))
        future = loop.create_future()
        await self.queue.put((query, k, future))
        result = await future
        return result

    async def _run(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await queue.get()]
            while len(items) < self.max_batch and not queue.empty():
                items.append(queue.get_nowait())
            k = max(item[1] for item in items)
            try:
                results = await loop.run_in_executor(None, self.engine.recommend, [q for q, _, _ in items], k)
            except Exception as e:  # a failure of the whole call goes to every waiting request
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.batches += 1
            self.batched_requests += len(items)
            for (_, k_i, future), res in zip(items, results, strict=True):
                if future.done():  # the client went away
                    continue
                if isinstance(res, Exception):
                    future.set_exception(res)
                else:
                    res.items, res.scores = res.items[:k_i], res.scores[:k_i]
                    future.set_result(res)


# --- the app ----------------------------------------------------------------------------------

def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """Build the service around a ready engine; raises SeqrecError for unsafe settings."""
    s = settings or ServeSettings()
    s.check()
    metrics = Metrics()
    if engine.recall is not None:
        metrics.gauges["seqrec_ann_recall_at_10"] = ("Recall@10 of the ANN index against exact, measured at start.",
                                                     engine.recall)
    metrics.gauges["seqrec_catalogue_items"] = ("Items the model can recommend.", engine.num_items)

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user: Id | None = Field(None, description="a user id the store knows (the run's users or /events users)")
        history: list[Id] | None = Field(None, max_length=s.max_history,
                                         description="item ids, oldest first; appended after the user's stored history")
        k: int = Field(10, ge=1, le=s.max_k)
        exclude: list[Id] = Field(default_factory=list, max_length=s.max_exclude, description="never recommend these")
        exclude_seen: bool = Field(True, description="leave out items already in the history")

        @model_validator(mode="after")
        def _need_input(self):
            if self.user is None and not self.history:
                raise ValueError('give "user" (a known user id) or a non-empty "history" of item ids')
            return self

    class RecommendResponse(BaseModel):
        user: str | None
        items: list[str]
        scores: list[float]
        unknown_items: list[str] = Field(description="history items this model does not know (ignored)")
        history_length: int = Field(description="known items in the history (the model reads the last max_len)")

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        requests: list[RecommendRequest] = Field(min_length=1, max_length=s.max_batch)

    class BatchItem(BaseModel):
        user: str | None = None
        items: list[str] = []
        scores: list[float] = []
        unknown_items: list[str] = []
        history_length: int = 0
        status: int = 200
        error: str | None = None

    class BatchResponse(BaseModel):
        results: list[BatchItem]

    class Event(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user: Id
        item: Id
        timestamp: float | None = Field(None, allow_inf_nan=False, description="unix seconds; default: now")

    class EventBatch(BaseModel):
        model_config = ConfigDict(extra="forbid")
        events: list[Event] = Field(min_length=1, max_length=s.max_batch)

    class EventsResponse(BaseModel):
        accepted: int
        unknown_items: list[str] = Field(description="stored, but unknown to the current model (ignored by it)")

    def check_token(authorization: str | None = Header(None, description="Bearer <token>")) -> None:
        if not s.token:
            return
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise HTTPException(401, "missing bearer token: send the header 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(value.strip().encode(), s.token.encode()):
            raise HTTPException(401, "wrong bearer token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    read_deps = [Depends(check_token)] if s.protect_reads else []
    app = FastAPI(title="seqrec", version="1", description="Next-item recommendations from a seqrec run "
                  f"({engine.run.path.name}, {engine.num_items:,} items, retrieval: {engine.index_kind}).")
    app.state.engine = engine
    app.state.metrics = metrics
    app.add_middleware(ServiceMiddleware, metrics=metrics, max_body_bytes=s.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        """422 with field errors, without echoing back huge inputs (an oversize history)."""
        errors = []
        for e in exc.errors():
            e = {k: v for k, v in e.items() if k != "url"}
            if len(repr(e.get("input"))) > 200:
                e["input"] = "<omitted: too long>"
            errors.append(e)
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(SeqrecError)
    async def _seqrec_error(request: Request, exc: SeqrecError):
        status = 404 if isinstance(exc, UnknownUserError) else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    def to_query(r: RecommendRequest) -> EngineQuery:
        return EngineQuery(r.user, r.history, r.exclude, r.exclude_seen)

    batcher = MicroBatcher(engine, s.max_batch)
    app.state.batcher = batcher

    @app.post("/recommend", response_model=RecommendResponse, dependencies=read_deps,
              responses={404: {"description": "unknown user"}})
    async def recommend(req: RecommendRequest):
        """Top-k next items for a known user, an explicit history, or both (history after the stored one)."""
        engine.check_k(req.k)
        result = await batcher.submit(to_query(req), req.k)
        return JSONResponse(vars(result))  # already the response shape; skips a second validation pass

    @app.post("/recommend/batch", response_model=BatchResponse, dependencies=read_deps)
    def recommend_batch(req: BatchRequest):
        """Many requests in one model call; a bad request gets its own status and error, not the batch's."""
        k = max(r.k for r in req.requests)
        engine.check_k(k)
        out = []
        for r, res in zip(req.requests, engine.recommend([to_query(r) for r in req.requests], k), strict=True):
            if isinstance(res, SeqrecError):
                out.append(BatchItem(user=r.user, status=404 if isinstance(res, UnknownUserError) else 422,
                                     error=str(res)))
            else:
                out.append(BatchItem(user=res.user, items=res.items[: r.k], scores=res.scores[: r.k],
                                     unknown_items=res.unknown_items, history_length=res.history_length))
        return BatchResponse(results=out)

    if s.writes:
        @app.post("/events", response_model=EventsResponse, dependencies=[Depends(check_token)],
                  responses={401: {"description": "missing or wrong bearer token"}})
        def events(req: Event | EventBatch):
            """Append interactions; the user's next recommendation includes them (new users are created)."""
            batch = req.events if isinstance(req, EventBatch) else [req]
            now = time.time()
            rows = [(e.user, e.item, now if e.timestamp is None else e.timestamp) for e in batch]
            engine.store.append(rows)
            unknown = list(dict.fromkeys(e.item for e in batch if e.item not in engine.vocab.index))
            return EventsResponse(accepted=len(rows), unknown_items=unknown)

    @app.get("/items/{item_id}/similar", response_model=RecommendResponse, dependencies=read_deps)
    def similar(item_id: str, k: int = Query(10, ge=1, le=s.max_k)):
        """Items whose embeddings are closest (cosine) to this one."""
        try:
            res = engine.similar(item_id, k)
        except UnknownItemError as e:
            raise HTTPException(404, str(e)) from None
        return RecommendResponse(**vars(res))

    @app.get("/health")
    def health():
        """Liveness plus what is being served."""
        return {"status": "ok", "run": str(engine.run.path), "model": engine.run.config.model_name,
                "items": engine.num_items, "retrieval": engine.index_kind,
                "ann_recall_at_10": None if engine.recall is None or math.isnan(engine.recall) else engine.recall,
                "writes": s.writes}

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=read_deps)
    def prometheus():
        """Prometheus text format: request counts and latency histograms by route."""
        metrics.gauges["seqrec_model_batches_total"] = ("Model calls made for /recommend.", batcher.batches)
        metrics.gauges["seqrec_model_batched_requests_total"] = ("/recommend requests answered by those calls.",
                                                                 batcher.batched_requests)
        if engine.index is not None:
            metrics.gauges["seqrec_ann_exact_fallbacks_total"] = (
                "ANN rows answered exactly because filtering left fewer than k.", engine.index.fallbacks)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
