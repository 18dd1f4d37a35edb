"""Other people's apps: re-creations of common FastAPI and Starlette patterns that aiobs was
not designed around, each with the requests to send and what aiobs should record for them.

Every factory builds a fresh app each call, so the same app can be built twice: once bare and
once instrumented. A factory takes ``instrument`` (a no-op for the bare build) and calls it
where a user would write ``aiobs.instrument(app)``: usually last, between the middleware added
before and after it for the middleware apps. ``workdir`` is a fresh directory for files.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    FastAPI,
    HTTPException,
    Request,
    WebSocket,
)
from fastapi.exceptions import FastAPIDeprecationWarning
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.sse import EventSourceResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.routing import Host, Mount, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Instrument = Callable[[Any], object]
CallKind = Literal["http", "websocket", "disconnect"]

UNMATCHED = "unmatched"


@dataclass(frozen=True, repr=False)
class Call:
    """One request to send, and what it should be recorded as.

    ``status`` is what the client receives; ``route`` the template label expected for it.
    ``kind`` is ``websocket`` for a websocket session (no http_* series, no span) and
    ``disconnect`` for a streaming request whose client goes away after the first chunk
    (recorded as 499). ``escapes`` is the exception class that reaches the server through
    the app (Starlette re-raises after answering); ``unhandled`` says the app has no handler
    of its own for it, so aiobs logs it and may answer its default JSON 500.
    ``streaming`` is None where the wire shape depends on middleware (not pinned).
    """

    method: str
    path: str
    route: str = ""
    status: int = 0
    kind: CallKind = "http"
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    streaming: bool | None = False
    escapes: type[BaseException] | None = None
    unhandled: bool = False

    def __repr__(self) -> str:
        host = self.headers.get("Host")
        return f"{self.method} {self.path}" + (f" (Host: {host})" if host else "")

    @property
    def recorded_status(self) -> str:
        """The ``status`` label: what was sent, or 499 when the client went away."""
        return "499" if self.kind == "disconnect" else str(self.status)

    @property
    def aiobs_default_500(self) -> bool:
        """aiobs's documented difference: its JSON 500 where the app would answer its own
        plain-text one (an unhandled exception before the response started)."""
        return self.unhandled and self.status == 500


@dataclass
class Built:
    """A freshly built app and the list its code appends side effects to."""

    app: ASGIApp
    effects: list[str]


@dataclass(frozen=True)
class DropInApp:
    """An app factory with its requests. ``root_path`` is the ASGI root_path the server
    sends (a proxy's prefix); ``effects``, when given, is the exact sequence of side effects
    one run of every call produces (the test driver appends ``sent PATH`` when a response
    has ended)."""

    name: str
    build: Callable[[Instrument, Path], Built]
    calls: tuple[Call, ...]
    root_path: str = ""
    effects: tuple[str, ...] | None = None


# --- 1. the user's own exception handlers -----------------------------------------------------
class ModelOverloaded(Exception):
    """A custom exception an inference service maps to 503."""


def own_exception_handlers(instrument: Instrument, workdir: Path) -> Built:
    effects: list[str] = []
    app = FastAPI()

    @app.exception_handler(Exception)
    async def on_any_error(request: Request, exc: Exception) -> JSONResponse:
        effects.append(f"handler {type(exc).__name__}")
        return JSONResponse({"message": "our own 500"}, status_code=500)

    @app.exception_handler(ModelOverloaded)
    async def on_overloaded(request: Request, exc: Exception) -> JSONResponse:
        effects.append("overloaded handler")
        return JSONResponse(
            {"error": "overloaded", "model": str(exc)},
            status_code=503,
            headers={"Retry-After": "7"},
        )

    @app.get("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/predict/{model}")
    async def predict(model: str) -> None:
        raise ModelOverloaded(model)

    @app.get("/crash/{n}")
    def crash(n: int) -> None:
        raise ValueError(f"crash {n}")

    instrument(app)
    return Built(app, effects)


# --- 2. HTTPException with headers, validation errors -----------------------------------------
class Item(BaseModel):
    name: str
    price: float


def http_exceptions(instrument: Instrument, workdir: Path) -> Built:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        if item_id == 0:
            raise HTTPException(404, "no such item", headers={"X-Error": "item-missing"})
        return {"item_id": item_id}

    @app.get("/admin/{section}")
    async def admin(section: str) -> None:
        raise HTTPException(403, {"reason": "admins only"}, headers={"X-Required-Role": "admin"})

    @app.post("/items")
    async def create_item(item: Item) -> Item:
        return item

    @app.get("/search")
    async def search(limit: int = 10) -> dict[str, int]:
        return {"limit": limit}

    instrument(app)
    return Built(app, [])


# --- 3. dependencies that raise ----------------------------------------------------------------
def raising_dependencies(instrument: Instrument, workdir: Path) -> Built:
    effects: list[str] = []
    app = FastAPI()

    def require_token(request: Request) -> str:
        token = request.headers.get("x-token")
        if token != "secret":
            raise HTTPException(401, "bad token", headers={"WWW-Authenticate": "Bearer"})
        return token

    async def db_session() -> AsyncIterator[str]:
        effects.append("session open")
        try:
            yield "session"
        except HTTPException as exc:
            effects.append(f"session saw {exc.status_code}")
            raise
        finally:
            effects.append("session closed")

    @app.get("/private/{doc}")
    async def private(doc: str, token: str = Depends(require_token)) -> dict[str, str]:
        return {"doc": doc}

    @app.put("/orders/{order_id}")
    async def update_order(order_id: int, session: str = Depends(db_session)) -> dict[str, int]:
        if order_id == 0:
            raise HTTPException(409, "order is locked")
        effects.append(f"updated {order_id}")
        return {"order_id": order_id}

    instrument(app)
    return Built(app, effects)


# --- 4. background tasks -----------------------------------------------------------------------
def background_tasks(instrument: Instrument, workdir: Path) -> Built:
    effects: list[str] = []
    app = FastAPI()

    def send_welcome(user: str) -> None:
        effects.append(f"welcome {user}")

    async def audit(user: str) -> None:
        await asyncio.sleep(0.01)
        effects.append(f"audit {user}")

    @app.post("/signup/{user}")
    async def signup(user: str, tasks: BackgroundTasks) -> dict[str, str]:
        effects.append(f"signup {user}")
        tasks.add_task(send_welcome, user)
        return {"user": user}

    @app.delete("/users/{user}")
    async def remove(user: str) -> JSONResponse:
        return JSONResponse({"removed": user}, background=BackgroundTask(audit, user))

    instrument(app)
    return Built(app, effects)


# --- 5. streaming: sync and async generators, SSE ---------------------------------------------
STREAM_GAP = 0.05
"""Seconds between the chunks of ``/slow`` (3 chunks, so the stream lasts >= 0.1 s)."""


def streaming_responses(instrument: Instrument, workdir: Path) -> Built:
    app = FastAPI()

    def sync_chunks() -> Iterator[bytes]:
        for n in range(3):
            yield f"line {n}\n".encode()

    async def async_chunks() -> AsyncIterator[str]:
        for n in range(3):
            await asyncio.sleep(0)
            yield f"part {n}\n"

    async def slow_chunks() -> AsyncIterator[bytes]:
        for n in range(3):
            if n:
                await asyncio.sleep(STREAM_GAP)
            yield f"slow {n}\n".encode()

    async def events() -> AsyncIterator[str]:
        for n in range(3):
            yield f'data: {{"token": {n}}}\n\n'
        yield "data: [DONE]\n\n"

    @app.get("/download/{name}")
    def download(name: str) -> StreamingResponse:
        return StreamingResponse(sync_chunks(), media_type="text/plain")

    @app.get("/stream/{kind}")
    async def stream(kind: str) -> StreamingResponse:
        return StreamingResponse(async_chunks(), media_type="text/plain")

    @app.get("/slow")
    async def slow() -> StreamingResponse:
        return StreamingResponse(slow_chunks(), media_type="text/plain")

    @app.post("/v1/completions")
    async def completions() -> StreamingResponse:
        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/v1/events/{topic}", response_class=EventSourceResponse)
    async def native_events(topic: str) -> AsyncIterator[dict[str, str]]:
        for n in range(2):
            yield {"topic": topic, "n": str(n)}

    @app.get("/plain")
    async def plain() -> dict[str, str]:
        return {"plain": "json"}

    instrument(app)
    return Built(app, [])


# --- 6. websocket ------------------------------------------------------------------------------
def websocket_echo(instrument: Instrument, workdir: Path) -> Built:
    app = FastAPI()

    @app.websocket("/ws/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(f"echo: {text}")
        await websocket.close(code=1000)

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    instrument(app)
    return Built(app, [])


# --- 7. mounts: a FastAPI sub-app, StaticFiles, a plain Starlette app with Route/Mount/Host ----
def mounted_apps(instrument: Instrument, workdir: Path) -> Built:
    static = workdir / "static"
    static.mkdir(exist_ok=True)
    hello = static / "hello.txt"
    hello.write_text("hello, static\n")
    os.utime(hello, (1_700_000_000, 1_700_000_000))  # same last-modified and etag in every build
    app = FastAPI()
    sub = FastAPI()

    @sub.get("/items/{x}")
    async def sub_item(x: int) -> dict[str, int]:
        return {"x": x}

    @app.get("/home")
    async def home() -> dict[str, str]:
        return {"home": "page"}

    app.mount("/sub", sub)
    app.mount("/static", StaticFiles(directory=static), name="static")
    instrument(app)
    return Built(app, [])


def starlette_routing(instrument: Instrument, workdir: Path) -> Built:
    async def user(request: Request) -> Response:
        return PlainTextResponse(f"user {request.path_params['uid']}")

    async def stats(request: Request) -> Response:
        return JSONResponse({"stat": request.path_params["name"]})

    async def api_ping(request: Request) -> Response:
        return JSONResponse({"pong": request.path_params["n"], "host": request.url.hostname})

    admin = Router(routes=[Route("/stats/{name}", stats)])
    api = Router(routes=[Route("/v1/ping/{n:int}", api_ping)])
    app = Starlette(
        routes=[
            Route("/users/{uid}", user),
            Mount("/admin", app=admin),
            Host("api.example.com", app=api),
        ]
    )
    instrument(app)
    return Built(app, [])


# --- 8. root_path -----------------------------------------------------------------------------
def _root_path_routes(app: FastAPI) -> None:
    @app.get("/items/{item_id}")
    async def item(item_id: int, request: Request) -> dict[str, Any]:
        return {"item_id": item_id, "url": str(request.url), "root": request.scope["root_path"]}

    sub = FastAPI()

    @sub.get("/items/{x}")
    async def sub_item(x: int, request: Request) -> dict[str, Any]:
        return {"x": x, "url": str(request.url)}

    app.mount("/sub", sub)


def fastapi_root_path(instrument: Instrument, workdir: Path) -> Built:
    with warnings.catch_warnings():  # deprecated in FastAPI 0.165, still common in the wild
        warnings.simplefilter("ignore", FastAPIDeprecationWarning)
        app = FastAPI(root_path="/api")
    _root_path_routes(app)
    instrument(app)
    return Built(app, [])


def asgi_root_path(instrument: Instrument, workdir: Path) -> Built:
    app = FastAPI()
    _root_path_routes(app)
    instrument(app)
    return Built(app, [])


# --- 9. lifespan state -------------------------------------------------------------------------
def lifespan_state(instrument: Instrument, workdir: Path) -> Built:
    effects: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        effects.append("startup")
        yield {"model": "tiny-llm", "loaded_at": "boot"}
        effects.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/model/{field}")
    async def model(field: str, request: Request) -> dict[str, str]:
        return {field: getattr(request.state, field)}

    instrument(app)
    return Built(app, effects)


# --- 10. middleware added before and after instrument ------------------------------------------
class AddHeader(BaseHTTPMiddleware):
    """The tutorial middleware: time the request, add a header."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["X-Served-By"] = "tutorial-middleware"
        return response


class AcceptedForJobs:
    """A pure ASGI middleware that rewrites the status of one path: 200 becomes 202."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/jobs":
            await self.app(scope, receive, send)
            return

        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                message = {**message, "status": 202}
            await send(message)

        await self.app(scope, receive, rewrite)


def _add_user_middleware(app: FastAPI) -> None:
    app.add_middleware(AddHeader)
    app.add_middleware(AcceptedForJobs)
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    app.add_middleware(CORSMiddleware, allow_origins=["https://ui.example"], allow_methods=["*"])


def _middleware_routes(app: FastAPI) -> None:
    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.post("/jobs")
    async def jobs() -> dict[str, str]:
        return {"job": "queued"}

    @app.get("/large")
    async def large() -> PlainTextResponse:
        return PlainTextResponse("0123456789abcdef" * 1000)


def middleware_before_instrument(instrument: Instrument, workdir: Path) -> Built:
    app = FastAPI()
    _middleware_routes(app)
    _add_user_middleware(app)
    instrument(app)
    return Built(app, [])


def middleware_after_instrument(instrument: Instrument, workdir: Path) -> Built:
    app = FastAPI()
    _middleware_routes(app)
    instrument(app)
    _add_user_middleware(app)
    return Built(app, [])


# --- 11. APIRouter prefixes and nesting --------------------------------------------------------
def nested_routers(instrument: Instrument, workdir: Path) -> Built:
    app = FastAPI()
    items = APIRouter(prefix="/items", tags=["items"])
    things = APIRouter(prefix="/things")
    parts = APIRouter(prefix="/{thing_id}/parts")

    @items.get("/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @things.get("/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"thing_id": thing_id}

    @parts.get("/{part_id}")
    async def part(thing_id: str, part_id: int) -> dict[str, Any]:
        return {"thing_id": thing_id, "part_id": part_id}

    things.include_router(parts)
    app.include_router(items)
    app.include_router(things, prefix="/v2")
    instrument(app)
    return Built(app, [])


# --- 12. an unhandled exception, no handler of the app's own ------------------------------------
class InferenceCrashed(RuntimeError):
    """What a model runtime raises when it falls over."""


def unhandled_exception(instrument: Instrument, workdir: Path) -> Built:
    app = FastAPI()

    @app.get("/boom/{n}")
    async def boom(n: int) -> None:
        raise InferenceCrashed(f"model crashed on input {n}")

    @app.post("/sync-boom")
    def sync_boom() -> None:
        raise InferenceCrashed("sync crash")

    @app.get("/fine")
    async def fine() -> dict[str, str]:
        return {"status": "fine"}

    instrument(app)
    return Built(app, [])


# --- 13. a stream that breaks after the response started ---------------------------------------
class StreamBroke(RuntimeError):
    """Raised by a generator after its first chunk was sent."""


def broken_stream(instrument: Instrument, workdir: Path) -> Built:
    app = FastAPI()

    async def tokens() -> AsyncIterator[str]:
        yield "data: first\n\n"
        await asyncio.sleep(0)
        raise StreamBroke("upstream model went away")

    @app.get("/generate/{model}")
    async def generate(model: str) -> StreamingResponse:
        return StreamingResponse(tokens(), media_type="text/event-stream")

    instrument(app)
    return Built(app, [])


# --- 14. a client that disconnects mid-stream --------------------------------------------------
TICKS = 20


def ticker_stream(instrument: Instrument, workdir: Path) -> Built:
    """A long stream; the generator records each chunk it produces in ``effects``."""
    effects: list[str] = []
    app = FastAPI()

    async def ticks() -> AsyncIterator[bytes]:
        for n in range(TICKS):
            if n:
                await asyncio.sleep(0.02)
            effects.append(f"chunk {n}")
            yield f"tick {n}\n".encode()

    @app.get("/ticker/{symbol}")
    async def ticker(symbol: str) -> StreamingResponse:
        return StreamingResponse(ticks(), media_type="text/plain")

    instrument(app)
    return Built(app, effects)


TICKER_PATH = "/ticker/ACME"
TICKER_ROUTE = "/ticker/{symbol}"

# --- the catalogue -----------------------------------------------------------------------------
GZIP = {"Accept-Encoding": "gzip"}
PREFLIGHT = {"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"}


def _middleware_calls() -> tuple[Call, ...]:
    # BaseHTTPMiddleware re-streams every response it wraps: whether aiobs sees a stream
    # depends on where it sits, so first-byte observations are not pinned here.
    return (
        Call("GET", "/hello", "/hello", 200, streaming=None),
        Call("POST", "/jobs", "/jobs", 202, streaming=None),
        Call("GET", "/large", "/large", 200, headers=GZIP, streaming=None),
        # Answered by CORSMiddleware before any router ran: no route served it.
        Call("OPTIONS", "/jobs", "unmatched", 200, headers=PREFLIGHT, streaming=None),
        Call(
            "GET", "/hello", "/hello", 200, headers={"Origin": "https://ui.example"}, streaming=None
        ),
        Call("GET", "/nowhere", UNMATCHED, 404, streaming=None),
    )


def _root_path_calls(prefix: str, sub_app_found: bool = True) -> tuple[Call, ...]:
    # FastAPI(root_path=...) behind a proxy that strips the prefix: a mounted sub-app then
    # sees a root_path its path does not start with and finds none of its routes (Starlette).
    sub = (
        Call("GET", f"{prefix}/sub/items/5", "/sub/items/{x}", 200)
        if sub_app_found
        else Call("GET", f"{prefix}/sub/items/5", UNMATCHED, 404)
    )
    return (
        Call("GET", f"{prefix}/items/7", "/items/{item_id}", 200),
        Call("GET", f"{prefix}/items/x", "/items/{item_id}", 422),
        sub,
        Call("GET", f"{prefix}/nowhere", UNMATCHED, 404),
    )


DROP_IN_APPS: tuple[DropInApp, ...] = (
    DropInApp(
        "own_exception_handlers",
        own_exception_handlers,
        (
            Call("GET", "/ok", "/ok", 200),
            Call("GET", "/predict/resnet50", "/predict/{model}", 503),
            Call("GET", "/crash/3", "/crash/{n}", 500, escapes=ValueError),
        ),
        effects=(
            "sent /ok",
            "overloaded handler",
            "sent /predict/resnet50",
            "handler ValueError",
            "sent /crash/3",
        ),
    ),
    DropInApp(
        "http_exceptions",
        http_exceptions,
        (
            Call("GET", "/items/3", "/items/{item_id}", 200),
            Call("GET", "/items/0", "/items/{item_id}", 404),
            Call("GET", "/admin/billing", "/admin/{section}", 403),
            Call("POST", "/items", "/items", 422, json={"name": "x", "price": "free"}),
            Call("POST", "/items", "/items", 200, json={"name": "x", "price": 1.5}),
            Call("GET", "/search", "/search", 422, params={"limit": "many"}),
            Call("GET", "/items/abc", "/items/{item_id}", 422),
        ),
    ),
    DropInApp(
        "raising_dependencies",
        raising_dependencies,
        (
            Call("GET", "/private/report", "/private/{doc}", 401),
            Call("GET", "/private/report", "/private/{doc}", 200, headers={"X-Token": "secret"}),
            Call("PUT", "/orders/5", "/orders/{order_id}", 200),
            Call("PUT", "/orders/0", "/orders/{order_id}", 409),
        ),
        effects=(
            "sent /private/report",
            "sent /private/report",
            "session open",
            "updated 5",
            "sent /orders/5",  # FastAPI closes a yield dependency after the response is sent
            "session closed",
            "session open",
            "session saw 409",
            "session closed",
            "sent /orders/0",
        ),
    ),
    DropInApp(
        "background_tasks",
        background_tasks,
        (
            Call("POST", "/signup/ada", "/signup/{user}", 200),
            Call("DELETE", "/users/bob", "/users/{user}", 200),
        ),
        effects=(
            "signup ada",
            "sent /signup/ada",
            "welcome ada",
            "sent /users/bob",
            "audit bob",
        ),
    ),
    DropInApp(
        "streaming_responses",
        streaming_responses,
        (
            Call("GET", "/download/report.csv", "/download/{name}", 200, streaming=True),
            Call("GET", "/stream/async", "/stream/{kind}", 200, streaming=True),
            Call("GET", "/slow", "/slow", 200, streaming=True),
            Call("POST", "/v1/completions", "/v1/completions", 200, streaming=True),
            Call("GET", "/v1/events/news", "/v1/events/{topic}", 200, streaming=True),
            Call("GET", "/plain", "/plain", 200),
        ),
    ),
    DropInApp(
        "websocket_echo",
        websocket_echo,
        (
            Call("WEBSOCKET", "/ws/echo", kind="websocket"),
            Call("WEBSOCKET", "/ws/nowhere", kind="websocket"),
            Call("GET", "/ping", "/ping", 200),
        ),
    ),
    DropInApp(
        "mounted_apps",
        mounted_apps,
        (
            Call("GET", "/home", "/home", 200),
            Call("GET", "/sub/items/4", "/sub/items/{x}", 200),
            Call("GET", "/sub/items/four", "/sub/items/{x}", 422),
            Call("GET", "/sub/missing", UNMATCHED, 404),
            Call("GET", "/static/hello.txt", "/static/{path}", 200),
            Call("GET", "/static/missing.txt", "/static/{path}", 404),
        ),
    ),
    DropInApp(
        "starlette_routing",
        starlette_routing,
        (
            Call("GET", "/users/42", "/users/{uid}", 200),
            Call("GET", "/admin/stats/cpu", "/admin/stats/{name}", 200),
            Call("GET", "/admin/missing", UNMATCHED, 404),
            Call("GET", "/v1/ping/3", "/v1/ping/{n}", 200, headers={"Host": "api.example.com"}),
            Call("GET", "/v1/ping/3", UNMATCHED, 404, headers={"Host": "other.example.com"}),
            Call("POST", "/users/42", "/users/{uid}", 405),
        ),
    ),
    DropInApp("fastapi_root_path", fastapi_root_path, _root_path_calls("/api")),
    DropInApp(
        "fastapi_root_path_stripped_by_proxy",
        fastapi_root_path,
        _root_path_calls("", sub_app_found=False),
    ),
    DropInApp("asgi_root_path", asgi_root_path, _root_path_calls("/gw"), root_path="/gw"),
    DropInApp(
        "lifespan_state",
        lifespan_state,
        (
            Call("GET", "/model/model", "/model/{field}", 200),
            Call("GET", "/model/loaded_at", "/model/{field}", 200),
        ),
        effects=("startup", "sent /model/model", "sent /model/loaded_at", "shutdown"),
    ),
    DropInApp("middleware_before_instrument", middleware_before_instrument, _middleware_calls()),
    DropInApp("middleware_after_instrument", middleware_after_instrument, _middleware_calls()),
    DropInApp(
        "nested_routers",
        nested_routers,
        (
            Call("GET", "/items/9", "/items/{item_id}", 200),
            Call("GET", "/v2/things/t-1", "/v2/things/{thing_id}", 200),
            Call("GET", "/v2/things/t-1/parts/2", "/v2/things/{thing_id}/parts/{part_id}", 200),
            Call("GET", "/v2/things/t-1/parts/two", "/v2/things/{thing_id}/parts/{part_id}", 422),
            Call("GET", "/things/t-1", UNMATCHED, 404),
        ),
    ),
    DropInApp(
        "unhandled_exception",
        unhandled_exception,
        (
            Call("GET", "/fine", "/fine", 200),
            Call("GET", "/boom/1", "/boom/{n}", 500, escapes=InferenceCrashed, unhandled=True),
            Call("POST", "/sync-boom", "/sync-boom", 500, escapes=InferenceCrashed, unhandled=True),
            Call("GET", "/fine", "/fine", 200),
        ),
    ),
    DropInApp(
        "broken_stream",
        broken_stream,
        (
            Call(
                "GET",
                "/generate/tiny",
                "/generate/{model}",
                200,
                streaming=True,
                escapes=StreamBroke,
                unhandled=True,
            ),
        ),
    ),
    DropInApp(
        "client_disconnects_mid_stream",
        ticker_stream,
        (Call("GET", TICKER_PATH, TICKER_ROUTE, 200, kind="disconnect", streaming=True),),
        effects=("chunk 0", f"returned without ending {TICKER_PATH}"),
    ),
)

APPS_BY_NAME = {spec.name: spec for spec in DROP_IN_APPS}
