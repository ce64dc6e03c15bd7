"""The procmem HTTP service: FastAPI on uvicorn, safe by default.

Seed 001's endpoints (``/learn``, ``/predict``, ``/patterns``, ``/save``, ``/load``, ``/health``,
``/stats``) with its request shapes, plus the procedure API (create, read, update as a new
version, delete, search, versions, rollback, outcomes). OpenAPI docs at ``/docs``.

Safety:

* binds ``127.0.0.1`` by default; binding anything else requires an API key (``X-API-Key``
  header, compared with :func:`hmac.compare_digest`), and :func:`serve` refuses to start without
  one;
* request bodies are limited (1 MiB by default) on the raw bytes, before JSON parsing; list
  fields have maximum lengths;
* ``/save`` and ``/load`` only touch files inside the configured data directory (no absolute
  paths outside it, no ``..``, no symlinks leading out) and use procmem's JSON Lines export:
  nothing is ever unpickled;
* errors are JSON ``{"error": {"type", "message", "field"}}``, including FastAPI's own 422s.

A namespace (whose memory) is chosen per request by the ``X-Procmem-Namespace`` header or the
``namespace`` query parameter (default: the settings' namespace). Several uvicorn workers share
one SQLite store (WAL and a busy timeout); run them with ``serve(workers=N)``, which starts
``procmem.server:app_factory`` with settings passed through ``PROCMEM_*`` environment variables.

Example:
    >>> from procmem.server import ServerSettings, create_app
    >>> app = create_app(settings=ServerSettings(embedder="hashing", db=":memory:"))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, field_validator, model_validator

from procmem.errors import (
    ConfigurationError,
    EmbeddingError,
    ExecutionError,
    LearningError,
    NotFoundError,
    ProcedureNotFoundError,
    ProcMemError,
    RetrievalError,
    StorageError,
    ValidationError,
)
from procmem.types import Prediction, Procedure, ProcedureKind, ProcedureVersion, SearchResult

try:
    from fastapi import Depends, FastAPI, Header, Query, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import APIKeyHeader
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"procmem.server needs FastAPI and uvicorn: pip install 'procmem[server]' ({exc})") from exc

__all__ = ["ServerSettings", "app_factory", "create_app", "main", "serve"]

logger = logging.getLogger("procmem.server")

MIB = 1024 * 1024
MAX_ACTION_CHARS = 10_000
MAX_SESSION_ACTIONS = 10_000
MAX_CONTEXT_ACTIONS = 1_000
MIN_API_KEY_CHARS = 16
MAX_NAME_BYTES = 255  # NAME_MAX of Linux and macOS file systems
MAX_OFFSET = 2**63 - 1  # SQLite's INTEGER range
NAMESPACE_HEADER = "X-Procmem-Namespace"
API_KEY_HEADER = "X-API-Key"

_ENV = {
    "host": "PROCMEM_HOST",
    "port": "PROCMEM_PORT",
    "api_key": "PROCMEM_API_KEY",
    "data_dir": "PROCMEM_DATA_DIR",
    "db": "PROCMEM_DB",
    "store": "PROCMEM_STORE",
    "chroma_path": "PROCMEM_CHROMA_PATH",
    "chroma_host": "PROCMEM_CHROMA_HOST",
    "chroma_port": "PROCMEM_CHROMA_PORT",
    "embedder": "PROCMEM_EMBEDDER",
    "namespace": "PROCMEM_NAMESPACE",
    "max_body_bytes": "PROCMEM_MAX_BODY_BYTES",
    "workers": "PROCMEM_WORKERS",
}


def _default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("procmem", appauthor=False)) / "exports"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback interface (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerSettings(BaseModel):
    """Options of the HTTP service; :meth:`from_env` reads them from ``PROCMEM_*`` variables.

    Attributes:
        host: Interface to bind (``PROCMEM_HOST``); anything but loopback needs ``api_key``.
        port: TCP port (``PROCMEM_PORT``).
        api_key: Value clients must send in ``X-API-Key`` (``PROCMEM_API_KEY``); at least
            16 characters. None disables the check (loopback only).
        data_dir: The only directory ``/save`` and ``/load`` may touch (``PROCMEM_DATA_DIR``;
            default ``exports`` under the platform data dir).
        db: SQLite file of the store (``PROCMEM_DB``; default: procmem's default file).
        store: ``"sqlite"`` (default) or ``"chroma"`` (``PROCMEM_STORE``).
        chroma_path: Directory of an embedded Chroma store (``PROCMEM_CHROMA_PATH``).
        chroma_host: Host of a Chroma server (``PROCMEM_CHROMA_HOST``); wins over ``chroma_path``.
        chroma_port: Port of the Chroma server (``PROCMEM_CHROMA_PORT``).
        embedder: ``"minilm"`` (all-MiniLM-L6-v2, needs ``procmem[embeddings]``) or
            ``"hashing"`` (tests; lexical only) (``PROCMEM_EMBEDDER``).
        namespace: Namespace of requests that name none (``PROCMEM_NAMESPACE``).
        max_body_bytes: Largest request body accepted, in bytes (``PROCMEM_MAX_BODY_BYTES``).
        workers: uvicorn worker processes (``PROCMEM_WORKERS``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8002, ge=0, le=65535)
    api_key: SecretStr | None = None
    data_dir: Path | None = None
    db: str | None = None
    store: Literal["sqlite", "chroma"] = "sqlite"
    chroma_path: str | None = None
    chroma_host: str | None = None
    chroma_port: int = Field(default=8000, ge=1, le=65535)
    embedder: str = "minilm"
    namespace: str = Field(default="default", min_length=1, max_length=512)
    max_body_bytes: int = Field(default=MIB, ge=1024)
    workers: int = Field(default=1, ge=1, le=64)

    @field_validator("api_key")
    @classmethod
    def _key_length(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < MIN_API_KEY_CHARS:
            raise ValueError(f"api_key must have at least {MIN_API_KEY_CHARS} characters")
        return v

    @field_validator("embedder")
    @classmethod
    def _embedder_name(cls, v: str) -> str:
        if v not in {"minilm", "default", "sentence-transformers", "hashing"}:
            raise ValueError(f"embedder must be 'minilm' or 'hashing', got {v!r}")
        return v

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Build settings from ``PROCMEM_*`` variables, then ``overrides`` (None values ignored).

        Raises:
            ConfigurationError: A value is invalid (the message names the variable).
        """
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {k: env[var] for k, var in _ENV.items() if env.get(var) not in (None, "")}
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except Exception as exc:
            raise ConfigurationError(f"invalid server settings: {exc}") from None

    def to_env(self) -> dict[str, str]:
        """Return the ``PROCMEM_*`` variables that reproduce these settings in a worker process."""
        out: dict[str, str] = {}
        for key, var in _ENV.items():
            value = getattr(self, key)
            if value is None:
                continue
            out[var] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        return out

    def resolved_data_dir(self) -> Path:
        """The data directory, absolute with symlinks resolved."""
        return (self.data_dir or _default_data_dir()).expanduser().resolve()

    def check_bind(self) -> None:
        """Refuse to serve on a non-loopback interface without an API key.

        Raises:
            ConfigurationError: ``host`` is not loopback and ``api_key`` is not set.
        """
        if not is_loopback(self.host) and self.api_key is None:
            raise ConfigurationError(
                f"refusing to bind {self.host!r} without an API key: set PROCMEM_API_KEY (at least "
                f"{MIN_API_KEY_CHARS} characters) or bind 127.0.0.1"
            )


# ---------------------------------------------------------------------------- request models
class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CommandItem(BaseModel):
    """One action of a session in seed 001's shape: ``{"command": "git status"}``."""

    model_config = ConfigDict(extra="ignore")

    command: str | None = Field(default=None, min_length=1, max_length=MAX_ACTION_CHARS)
    action: str | None = Field(default=None, min_length=1, max_length=MAX_ACTION_CHARS)

    @model_validator(mode="after")
    def _one(self) -> CommandItem:
        if self.command is None and self.action is None:
            raise ValueError("each command needs a 'command' string")
        return self


Action = Annotated[str, Field(min_length=1, max_length=MAX_ACTION_CHARS)]
Tag = Annotated[str, Field(min_length=1, max_length=256)]


class LearnRequest(_Request):
    """``POST /learn``: one logged session of actions and its outcome."""

    session_commands: list[CommandItem | Action] = Field(min_length=1, max_length=MAX_SESSION_ACTIONS)
    session_outcome: Literal["success", "failure"] | StrictBool | None = None
    task: str | None = Field(default=None, max_length=MAX_ACTION_CHARS)
    session_id: str | None = Field(default=None, min_length=1, max_length=512)
    instructions: list[Annotated[str, Field(max_length=MAX_ACTION_CHARS)]] | None = Field(
        default=None, max_length=MAX_SESSION_ACTIONS,
        description="A multi-turn session's instruction per turn (then ``task`` is not needed).",
    )
    turns: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, max_length=MAX_SESSION_ACTIONS,
        description="For each action, the index in ``instructions`` of the turn it answers.",
    )

    def actions(self) -> list[str]:
        """The actions as strings."""
        return [a if isinstance(a, str) else (a.command or a.action or "") for a in self.session_commands]


class LearnResponse(BaseModel):
    """What ``POST /learn`` stored."""

    session_id: str
    actions: int
    outcome: str | None
    namespace: str


class PredictRequest(_Request):
    """``POST /predict``: the latest actions, oldest first."""

    current_context: list[Action] = Field(max_length=MAX_CONTEXT_ACTIONS)
    top_k: int = Field(default=3, ge=1, le=100)
    task: str | None = Field(default=None, max_length=MAX_ACTION_CHARS)


class PredictResponse(BaseModel):
    """Predicted next actions, best first."""

    predictions: list[Prediction]


class PatternsResponse(BaseModel):
    """Learned action patterns with counts and observed success rates.

    Each pattern: ``{"steps", "count", "successes", "failures", "success_rate"}``; the rate is
    ``successes / (successes + failures)`` over sessions with a known outcome, None when none.
    """

    patterns: list[dict[str, Any]]


class FileRequest(_Request):
    """``POST /save`` and ``POST /load``: a file inside the data directory."""

    filepath: str = Field(min_length=1, max_length=4096)


class SaveResponse(BaseModel):
    """What ``POST /save`` wrote."""

    filepath: str
    records: int


class LoadResponse(BaseModel):
    """What ``POST /load`` imported."""

    filepath: str
    procedures: int
    sessions: int


class HealthResponse(BaseModel):
    """Liveness."""

    status: str
    version: str


class ProcedurePatch(_Request):
    """Fields of a procedure to change (``PATCH``); every field optional."""

    kind: ProcedureKind | None = None
    name: str | None = Field(default=None, min_length=1, max_length=1024)
    description: str | None = Field(default=None, max_length=100_000)
    steps: list[Action | dict[str, Any]] | None = Field(default=None, max_length=1_000)
    parameters: dict[str, Any] | None = None
    triggers: list[Action] | None = Field(default=None, max_length=100)
    tags: list[Tag] | None = Field(default=None, max_length=100)
    metadata: dict[str, Any] | None = None
    importance: float | None = Field(default=None, ge=0.0, le=1.0)
    note: str | None = Field(default=None, max_length=1_000, description="Why (kept in the version history).")


class ProcedureIn(_Request):
    """A procedure to create (``POST``) or to replace as a new version (``PUT``)."""

    id: str | None = Field(default=None, min_length=1, max_length=512)
    kind: ProcedureKind = ProcedureKind.SKILL
    name: str = Field(min_length=1, max_length=1024)
    description: str = Field(default="", max_length=100_000)
    steps: list[Action | dict[str, Any]] = Field(default_factory=list, max_length=1_000)
    parameters: dict[str, Any] = Field(default_factory=dict)
    triggers: list[Action] = Field(default_factory=list, max_length=100)
    tags: list[Tag] = Field(default_factory=list, max_length=100)
    metadata: dict[str, Any] = Field(default_factory=dict)
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    note: str | None = Field(default=None, max_length=1_000, description="Why (kept in the version history).")


class ProcedureList(BaseModel):
    """A page of procedures."""

    procedures: list[Procedure]
    total: int


class DeleteResponse(BaseModel):
    """Result of ``DELETE``."""

    id: str
    deleted: bool


class VersionsResponse(BaseModel):
    """Kept versions, oldest first."""

    versions: list[ProcedureVersion]


class RollbackRequest(_Request):
    """``POST /procedures/{id}/rollback``."""

    version: int = Field(ge=1)


class SearchRequest(_Request):
    """``POST /search``."""

    query: str = Field(min_length=1, max_length=MAX_ACTION_CHARS)
    k: int = Field(default=5, ge=1, le=100)
    kinds: list[ProcedureKind] | None = Field(default=None, max_length=4)
    tags: list[Tag] | None = Field(default=None, max_length=50)
    min_score: float | None = None
    min_importance: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Only procedures whose importance after decay is at least this."
    )


class SearchResponse(BaseModel):
    """Search results, best first."""

    results: list[SearchResult]


class OutcomeRequest(_Request):
    """``POST /outcomes``: one execution or use of a procedure."""

    procedure_id: str = Field(min_length=1, max_length=512)
    success: StrictBool
    duration: float | None = Field(default=None, ge=0.0, description="Seconds.")
    error: str | None = Field(default=None, max_length=MAX_ACTION_CHARS)
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """The error object of every failed request."""

    type: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """``{"error": {"type", "message", "field"}}``."""

    error: ErrorBody


# ---------------------------------------------------------------------------- errors
class ApiError(Exception):
    """An error answered as structured JSON.

    Args:
        status: HTTP status code.
        type: Machine-readable error type (``"not_found"``, ``"forbidden_path"``...).
        message: Human-readable explanation.
        field: The offending field, if any.
    """

    def __init__(self, status: int, type: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.field = status, type, message, field


def _error(status: int, type: str, message: str, field: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": type, "message": message, "field": field, **extra}
    headers = {"WWW-Authenticate": "APIKey"} if status == 401 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


_STATUS: list[tuple[type[ProcMemError], int, str]] = [
    (NotFoundError, 404, "not_found"),
    (ValidationError, 422, "validation_error"),
    (ConfigurationError, 422, "configuration_error"),
    (StorageError, 503, "storage_error"),
    (EmbeddingError, 503, "embedding_error"),
    (RetrievalError, 503, "retrieval_error"),
    (LearningError, 500, "learning_error"),
    (ExecutionError, 500, "execution_error"),
]


def _procmem_error(exc: ProcMemError) -> JSONResponse:
    for cls, status, type_ in _STATUS:
        if isinstance(exc, cls):
            if status >= 500:
                logger.error("%s: %s", type(exc).__name__, exc)
            return _error(status, type_, str(exc), getattr(exc, "field", None))
    logger.error("%s: %s", type(exc).__name__, exc)
    return _error(500, "procmem_error", str(exc))


def _field(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return ".".join(parts) or None


def _detail(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error as ``{"field", "message", "type"}``, naming the body when it is at fault."""
    loc, kind = tuple(error.get("loc", ())), error.get("type")
    if kind == "json_invalid":  # its loc ends with a character offset, not a field
        why = (error.get("ctx") or {}).get("error")
        return {"field": None, "message": f"request body is not valid JSON{f': {why}' if why else ''}", "type": kind}
    message = str(error.get("msg", "invalid"))
    field = _field(loc)
    if field is None and loc[:1] == ("body",):
        message = f"request body: {message}"
    return {"field": field, "message": message, "type": kind}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.type, exc.message, exc.field)

    @app.exception_handler(ProcMemError)
    async def _pm_error(request: Request, exc: ProcMemError) -> JSONResponse:
        return _procmem_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [_detail(e) for e in exc.errors()]
        first = details[0] if details else {"field": None, "message": "invalid request"}
        message = f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
        return _error(422, "validation_error", message, first["field"], details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "internal server error (see the server log)")


# ---------------------------------------------------------------------------- body limit
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyLimitMiddleware:
    """Refuse request bodies larger than ``max_bytes`` with 413, before any JSON parsing.

    The ``Content-Length`` header is checked first; the body is then read (chunked bodies
    included) into a buffer that may not grow past ``max_bytes``, and replayed to the app.

    Args:
        app: The ASGI app.
        max_bytes: Largest body accepted, in bytes.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, send: Send, status: int, type_: str, message: str) -> None:
        response = _error(status, type_, message, None)
        response.headers["Connection"] = "close"
        await response(scope, _never, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = f"request body exceeds {self.max_bytes} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await self._refuse(scope, send, 400, "bad_request", "invalid Content-Length header")
                    return
                if length > self.max_bytes:
                    await self._refuse(scope, send, 413, "payload_too_large", too_big)
                    return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(scope, send, 413, "payload_too_large", too_big)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _never() -> Message:  # pragma: no cover - a response never reads the request
    return {"type": "http.disconnect"}


# ---------------------------------------------------------------------------- helpers
def build_memory(settings: ServerSettings) -> Any:
    """Open the :class:`~procmem.ProceduralMemory` the settings describe.

    Raises:
        ConfigurationError: Unknown embedder or store.
        ImportError: The embedder's or store's extra is missing (names it).
    """
    from procmem.memory import ProceduralMemory

    if settings.embedder == "hashing":
        from procmem.embeddings import HashingEmbedder

        embedder: Any = HashingEmbedder()
    else:
        from procmem.memory import _default_embedder

        embedder = _default_embedder()
    if settings.store == "chroma":
        from procmem.stores.chroma import ChromaStore

        name = getattr(embedder, "name", None)
        if settings.chroma_host:
            store: Any = ChromaStore(host=settings.chroma_host, port=settings.chroma_port, embedding_model=name)
        else:
            store = ChromaStore(path=settings.chroma_path, embedding_model=name)
        return ProceduralMemory(store=store, embedder=embedder, namespace=settings.namespace)
    return ProceduralMemory(path=settings.db, embedder=embedder, namespace=settings.namespace)


def resolve_data_path(data_dir: Path, filepath: str, *, forbidden: tuple[Path, ...] = ()) -> Path:
    """Resolve ``filepath`` inside ``data_dir``, refusing anything that leads out of it.

    Relative paths are taken from ``data_dir``; absolute paths must already lie inside it.
    Symlinks are resolved before the check, so a link pointing out of the directory is refused.

    Args:
        data_dir: The allowed directory, absolute and resolved.
        filepath: The path the client sent.
        forbidden: Files that may never be named (the store's own database files).

    Returns:
        The absolute, resolved path.

    Raises:
        ApiError: 403 ``forbidden_path`` when the path leaves the directory or names a
            forbidden file; 422 when it is malformed.
    """
    if "\x00" in filepath:
        raise ApiError(422, "validation_error", "filepath must not contain NUL bytes", "filepath")
    too_long = [part for part in Path(filepath).parts if len(os.fsencode(part)) > MAX_NAME_BYTES]
    if too_long:
        raise ApiError(
            422,
            "validation_error",
            f"filepath has a component longer than {MAX_NAME_BYTES} bytes ({too_long[0][:40]!r}...)",
            "filepath",
        )
    target = (data_dir / Path(filepath).expanduser()).resolve()
    if target == data_dir or not target.is_relative_to(data_dir):
        raise ApiError(
            403,
            "forbidden_path",
            f"filepath {filepath!r} is outside the data directory; use a path relative to it",
            "filepath",
        )
    if target in forbidden:
        raise ApiError(403, "forbidden_path", f"filepath {filepath!r} names the store's own database", "filepath")
    return target


def _file_error(exc: OSError, filepath: str) -> ApiError:
    """Map a file-system error of ``/save`` or ``/load`` to a structured answer (no server paths)."""
    import errno

    client_side = {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.ELOOP, errno.EEXIST}
    if exc.errno in client_side:
        return ApiError(422, "validation_error", f"cannot use filepath {filepath!r}: {exc.strerror}", "filepath")
    logger.error("file error on %r: %s", filepath, exc)
    return ApiError(503, "storage_error", f"cannot write or read {filepath!r}: {exc.strerror}", "filepath")


class _PredictorSync:
    """Drop a namespace's cached predictor when another process stored sessions meanwhile.

    Each process keeps its predictor in memory; with several workers on one store, a session
    learned by one worker would otherwise stay invisible to the others' predictions. Before a
    prediction the stored session count is compared with the count this process last saw.
    """

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _drop(memory: Any, namespace: str) -> None:
        memory.refresh(namespace)

    def before_predict(self, memory: Any, namespace: str) -> None:
        n = memory.store.count_sessions(namespace=namespace)
        with self._lock:
            seen = self._seen.get(namespace)
            if seen is not None and seen != n:
                self._drop(memory, namespace)
            self._seen[namespace] = n

    def learned(self, memory: Any, namespace: str, before: int, after: int, added: int) -> None:
        """Record a write of ``added`` sessions by this process that took the count from ``before`` to ``after``."""
        with self._lock:
            if self._seen.get(namespace) != before or after - before != added:
                self._drop(memory, namespace)  # someone else wrote too: rebuild on next use
            self._seen[namespace] = after


def _namespace_of(
    request: Request,
    header: Annotated[str | None, Header(alias=NAMESPACE_HEADER, max_length=512)] = None,
    namespace: Annotated[str | None, Query(max_length=512, description="Whose memory.")] = None,
) -> str:
    """The request's namespace: the header, else the query parameter, else the settings' default."""
    if header is not None and namespace is not None and header != namespace:
        raise ApiError(422, "validation_error", f"the {NAMESPACE_HEADER} header and ?namespace= disagree", "namespace")
    ns = header if header is not None else namespace
    if ns is None:
        return str(request.app.state.settings.namespace)
    if not ns.strip():
        raise ApiError(422, "validation_error", "namespace must not be blank", "namespace")
    return ns


Namespace = Annotated[str, Depends(_namespace_of)]


# ---------------------------------------------------------------------------- the app
def create_app(memory: Any = None, *, settings: ServerSettings | None = None) -> FastAPI:
    """Build the FastAPI app over a :class:`~procmem.ProceduralMemory`.

    Args:
        memory: The memory to serve; None opens the one ``settings`` describe (and closes it on
            shutdown).
        settings: Service options (default: :meth:`ServerSettings.from_env`).

    Returns:
        The ASGI app; run it with uvicorn, or use :func:`serve`.

    Raises:
        ConfigurationError: Invalid settings.
    """
    settings = settings or ServerSettings.from_env()
    owned = memory is None
    if memory is None:
        memory = build_memory(settings)
    data_dir = settings.resolved_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    store_path = getattr(memory.store, "path", None)
    forbidden: tuple[Path, ...] = ()
    if store_path and store_path != ":memory:":
        base = Path(store_path).resolve()
        forbidden = (base, Path(f"{base}-wal"), Path(f"{base}-shm"), Path(f"{base}-journal"))
    expected_key = settings.api_key.get_secret_value().encode() if settings.api_key else None
    sync = _PredictorSync()

    def load_indexes() -> None:
        # Load the vector indexes before the first search needs them (about 2 s at 100,000
        # procedures); their HNSW graphs and the tantivy word index, if any, go on building in
        # the background.
        try:
            memory.store.wait_for_ann(timeout=0)
            if hasattr(memory.store, "wait_for_lexical"):
                memory.store.wait_for_lexical(timeout=0)
        except Exception:  # a failure here must not stop the service; searches load lazily
            logger.exception("loading the search indexes failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if hasattr(memory.store, "wait_for_ann"):
            await asyncio.get_running_loop().run_in_executor(None, load_indexes)
        yield
        if owned:
            memory.close()

    app = FastAPI(
        title="procmem",
        version=_version(),
        description="Procedural memory for AI agents: learn sessions, predict next actions, store and search "
        "procedures. Send `X-API-Key` when the server has a key; choose a namespace with the "
        f"`{NAMESPACE_HEADER}` header or the `namespace` query parameter.",
        lifespan=lifespan,
        responses={
            401: {"model": ErrorResponse},
            413: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
        },
    )
    app.state.memory = memory
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    _install_error_handlers(app)

    api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="The server's API key.")

    def require_key(key: str | None = Security(api_key_header)) -> None:
        if expected_key is None:
            return
        if key is None:
            raise ApiError(401, "unauthorized", f"missing {API_KEY_HEADER} header", API_KEY_HEADER)
        if not hmac.compare_digest(key.encode("utf-8", "surrogateescape"), expected_key):
            raise ApiError(401, "unauthorized", f"invalid {API_KEY_HEADER}", API_KEY_HEADER)

    protected = [Depends(require_key)]

    def owned_procedure(procedure_id: str, namespace: str) -> Procedure:
        proc = memory.store.get(procedure_id)
        if proc.namespace != namespace:
            raise ProcedureNotFoundError(f"no procedure with id {procedure_id!r} in namespace {namespace!r}")
        return proc

    # ------------------------------------------------------------------ seed 001
    @app.get("/health", response_model=HealthResponse, tags=["service"])
    def health() -> HealthResponse:
        """Liveness probe (no API key needed)."""
        return HealthResponse(status="ok", version=_version())

    @app.get("/stats", dependencies=protected, tags=["service"])
    def stats(namespace: Namespace) -> dict[str, Any]:
        """Counts and averages of the namespace."""
        out = memory.stats(namespace=namespace)
        out.pop("path", None)  # do not reveal server file paths
        return out

    @app.post("/learn", response_model=LearnResponse, dependencies=protected, tags=["learning"])
    def learn(body: LearnRequest, namespace: Namespace) -> LearnResponse:
        """Learn one session of actions and its outcome (seed 001's ``learn_workflow``)."""
        before = memory.store.count_sessions(namespace=namespace)
        known = body.session_id is not None and memory.store.has_session(body.session_id, namespace=namespace)
        record = memory.learn_session(
            body.actions(), body.session_outcome, body.instructions or body.task,
            session_id=body.session_id, namespace=namespace, turns=body.turns,
        )
        after = memory.store.count_sessions(namespace=namespace)
        sync.learned(memory, namespace, before, after, 0 if known else 1)
        return LearnResponse(
            session_id=record.session_id, actions=len(record.actions), outcome=record.outcome, namespace=namespace
        )

    @app.post("/predict", response_model=PredictResponse, dependencies=protected, tags=["learning"])
    def predict(body: PredictRequest, namespace: Namespace) -> PredictResponse:
        """Predict the next actions after ``current_context``, best first."""
        sync.before_predict(memory, namespace)
        preds = memory.predict_next_action(body.current_context, task=body.task, top_k=body.top_k, namespace=namespace)
        return PredictResponse(predictions=preds)

    @app.get("/patterns", response_model=PatternsResponse, dependencies=protected, tags=["learning"])
    def patterns(
        namespace: Namespace,
        min_count: Annotated[int, Query(ge=1, le=1_000_000)] = 2,
        limit: Annotated[int, Query(ge=1, le=1_000)] = 50,
    ) -> PatternsResponse:
        """Learned action patterns with counts and success rates."""
        sync.before_predict(memory, namespace)
        return PatternsResponse(patterns=memory.patterns(min_count=min_count, limit=limit, namespace=namespace))

    @app.post("/save", response_model=SaveResponse, dependencies=protected, tags=["service"])
    def save(body: FileRequest, namespace: Namespace) -> SaveResponse:
        """Export the namespace to a JSON Lines file inside the data directory (never pickle)."""
        target = resolve_data_path(data_dir, body.filepath, forbidden=forbidden)
        try:
            records = memory.save(target, namespace=namespace)
        except OSError as exc:
            raise _file_error(exc, body.filepath) from exc
        return SaveResponse(filepath=str(target.relative_to(data_dir)), records=records)

    @app.post("/load", response_model=LoadResponse, dependencies=protected, tags=["service"])
    def load(body: FileRequest, namespace: Namespace) -> LoadResponse:
        """Import a file written by ``/save`` from the data directory (JSON Lines; never unpickles)."""
        target = resolve_data_path(data_dir, body.filepath, forbidden=forbidden)
        if not target.is_file():
            raise ApiError(404, "not_found", f"no file {body.filepath!r} in the data directory", "filepath")
        before = memory.store.count_sessions(namespace=namespace)
        try:
            counts = memory.load(target, namespace=namespace)
        except OSError as exc:
            raise _file_error(exc, body.filepath) from exc
        sync.learned(memory, namespace, before, memory.store.count_sessions(namespace=namespace), counts["sessions"])
        return LoadResponse(filepath=str(target.relative_to(data_dir)), **counts)

    # ------------------------------------------------------------------ procedures
    @app.post("/procedures", response_model=Procedure, status_code=201, dependencies=protected, tags=["procedures"])
    def create_procedure(body: ProcedureIn, namespace: Namespace) -> Procedure:
        """Create a procedure (version 1); 409 if the id exists."""
        data = body.model_dump(exclude={"note"}, exclude_none=True, mode="json")
        if body.id is not None and memory.store.get_many([body.id]):
            raise ApiError(409, "conflict", f"a procedure with id {body.id!r} exists; use PUT or PATCH", "id")
        data["namespace"] = namespace
        return memory.add_many([data], note=body.note or "")[0]

    @app.get("/procedures", response_model=ProcedureList, dependencies=protected, tags=["procedures"])
    def list_procedures(
        namespace: Namespace,
        kind: ProcedureKind | None = None,
        tag: Annotated[list[str] | None, Query(max_length=50)] = None,
        category: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> ProcedureList:
        """List the namespace's procedures, oldest first."""
        procs = memory.list(kind=kind, tags=tag, category=category, namespace=namespace, limit=limit, offset=offset)
        return ProcedureList(procedures=procs, total=memory.store.count(namespace=namespace))

    @app.get("/procedures/{procedure_id}", response_model=Procedure, dependencies=protected, tags=["procedures"])
    def get_procedure(procedure_id: str, namespace: Namespace) -> Procedure:
        """Return a procedure (counts one access)."""
        proc = owned_procedure(procedure_id, namespace)
        memory.store.touch([procedure_id])
        return proc

    def _update(procedure_id: str, namespace: str, changes: dict[str, Any], note: str | None) -> Procedure:
        owned_procedure(procedure_id, namespace)
        changes.pop("id", None)
        if not changes:
            raise ApiError(422, "validation_error", "no fields to change", None)
        return memory.update(procedure_id, note=note or "updated", **changes)

    @app.put("/procedures/{procedure_id}", response_model=Procedure, dependencies=protected, tags=["procedures"])
    def replace_procedure(procedure_id: str, body: ProcedureIn, namespace: Namespace) -> Procedure:
        """Replace a procedure's content as a new version (the old one is kept)."""
        if body.id is not None and body.id != procedure_id:
            raise ApiError(422, "validation_error", "body id differs from the path id", "id")
        return _update(procedure_id, namespace, body.model_dump(exclude={"note", "id"}, mode="json"), body.note)

    @app.patch("/procedures/{procedure_id}", response_model=Procedure, dependencies=protected, tags=["procedures"])
    def patch_procedure(procedure_id: str, body: ProcedurePatch, namespace: Namespace) -> Procedure:
        """Change some fields of a procedure as a new version (the old one is kept)."""
        changes = body.model_dump(exclude={"note"}, exclude_unset=True, mode="json")
        nulls = [k for k, v in changes.items() if v is None]
        if nulls:
            raise ApiError(422, "validation_error", f"{nulls[0]} must not be null", nulls[0])
        return _update(procedure_id, namespace, changes, body.note)

    @app.delete(
        "/procedures/{procedure_id}", response_model=DeleteResponse, dependencies=protected, tags=["procedures"]
    )
    def delete_procedure(procedure_id: str, namespace: Namespace) -> DeleteResponse:
        """Delete a procedure with its versions, usages and outcomes."""
        owned_procedure(procedure_id, namespace)
        return DeleteResponse(id=procedure_id, deleted=memory.delete(procedure_id))

    @app.get(
        "/procedures/{procedure_id}/versions",
        response_model=VersionsResponse,
        dependencies=protected,
        tags=["procedures"],
    )
    def versions(procedure_id: str, namespace: Namespace) -> VersionsResponse:
        """The kept versions, oldest first."""
        owned_procedure(procedure_id, namespace)
        return VersionsResponse(versions=memory.versions(procedure_id))

    @app.post(
        "/procedures/{procedure_id}/rollback",
        response_model=Procedure,
        dependencies=protected,
        tags=["procedures"],
    )
    def rollback(procedure_id: str, body: RollbackRequest, namespace: Namespace) -> Procedure:
        """Restore a kept version as a new version."""
        owned_procedure(procedure_id, namespace)
        return memory.rollback(procedure_id, body.version)

    @app.post("/search", response_model=SearchResponse, dependencies=protected, tags=["procedures"])
    def search(body: SearchRequest, namespace: Namespace) -> SearchResponse:
        """Hybrid search (dense + BM25 + past experience) over the namespace's procedures."""
        kinds = None if body.kinds is None else [k.value for k in body.kinds]
        results = memory.search(
            body.query, k=body.k, kinds=kinds, tags=body.tags, namespace=namespace, min_score=body.min_score,
            min_importance=body.min_importance,
        )
        return SearchResponse(results=results)

    @app.post("/outcomes", response_model=Procedure, dependencies=protected, tags=["procedures"])
    def outcomes(body: OutcomeRequest, namespace: Namespace) -> Procedure:
        """Record one execution of a procedure; returns it with updated statistics."""
        owned_procedure(body.procedure_id, namespace)
        return memory.record_outcome(
            body.procedure_id, body.success, duration=body.duration, error=body.error, details=body.details
        )

    return app


def _version() -> str:
    try:
        from procmem import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"


def app_factory() -> FastAPI:
    """Build the app from ``PROCMEM_*`` variables (``uvicorn procmem.server:app_factory --factory``)."""
    return create_app(settings=ServerSettings.from_env())


def serve(
    host: str | None = None,
    port: int | None = None,
    *,
    api_key: str | None = None,
    workers: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    db: str | os.PathLike[str] | None = None,
    embedder: str | None = None,
    namespace: str | None = None,
    store: str | None = None,
    max_body_bytes: int | None = None,
    settings: ServerSettings | None = None,
    memory: Any = None,
    log_level: str = "info",
) -> None:
    """Run the service with uvicorn until interrupted.

    Arguments given here override ``settings`` (default: :meth:`ServerSettings.from_env`).
    With ``workers > 1`` uvicorn starts ``procmem.server:app_factory`` in each worker process
    and the settings travel through ``PROCMEM_*`` environment variables.

    Args:
        host: Interface to bind (default 127.0.0.1); anything else needs ``api_key``.
        port: TCP port (default 8002).
        api_key: Key clients send in ``X-API-Key`` (at least 16 characters).
        workers: Worker processes sharing the store.
        data_dir: The only directory ``/save`` and ``/load`` may touch.
        db: SQLite file of the store.
        embedder: ``"minilm"`` or ``"hashing"``.
        namespace: Default namespace of requests.
        store: ``"sqlite"`` or ``"chroma"``.
        max_body_bytes: Largest request body, in bytes.
        settings: Base settings.
        memory: A memory to serve in this process (only with one worker).
        log_level: uvicorn log level.

    Raises:
        ConfigurationError: A non-loopback bind without an API key, invalid settings, or
            ``memory`` with several workers.
    """
    import uvicorn

    overrides = {
        "host": host,
        "port": port,
        "api_key": api_key,
        "workers": workers,
        "data_dir": None if data_dir is None else str(data_dir),
        "db": None if db is None else str(db),
        "embedder": embedder,
        "namespace": namespace,
        "store": store,
        "max_body_bytes": max_body_bytes,
    }
    if settings is None:
        settings = ServerSettings.from_env(**overrides)
    else:
        try:
            settings = ServerSettings(
                **{**settings.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
            )
        except Exception as exc:
            raise ConfigurationError(f"invalid server settings: {exc}") from None
    settings.check_bind()
    if memory is not None:
        if settings.workers > 1:
            raise ConfigurationError("a memory object cannot be shared by several worker processes; pass workers=1")
        uvicorn.run(create_app(memory, settings=settings), host=settings.host, port=settings.port, log_level=log_level)
        return
    if settings.workers == 1:
        uvicorn.run(create_app(settings=settings), host=settings.host, port=settings.port, log_level=log_level)
        return
    os.environ.update(settings.to_env())
    uvicorn.run(
        "procmem.server:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=log_level,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m procmem.server``: run the service (the API key comes from ``PROCMEM_API_KEY``).

    Returns:
        The exit status (2 for a configuration error).
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m procmem.server", description="Run the procmem HTTP service.")
    parser.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="TCP port (default 8002)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes sharing the store")
    parser.add_argument("--data-dir", default=None, help="the only directory /save and /load may touch")
    parser.add_argument("--db", default=None, help="SQLite file of the store")
    parser.add_argument("--embedder", default=None, help="minilm (default) or hashing")
    parser.add_argument("--store", default=None, help="sqlite (default) or chroma")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        serve(
            host=args.host,
            port=args.port,
            workers=args.workers,
            data_dir=args.data_dir,
            db=args.db,
            embedder=args.embedder,
            store=args.store,
            log_level=args.log_level,
        )
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
