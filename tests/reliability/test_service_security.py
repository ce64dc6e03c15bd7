"""The HTTP service under hostile clients: fuzzed by its own OpenAPI spec, and attacked.

* schemathesis generates requests (valid and invalid) for every operation of the app's
  ``/openapi.json``: no response is a 5xx, every error is the structured
  ``{"error": {"type", "message", "field"}}`` body, and responses match their documented schema;
* ``/save`` and ``/load`` never touch a file outside the data directory (``../``, absolute
  paths, symlinks leading out, the store's own database files);
* bodies over the limit are refused with 413 before parsing, streamed or not;
* with an API key configured, a missing or wrong key is refused with 401 on every protected route.
"""

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
)

from procmem.server import ServerSettings, build_memory, create_app  # noqa: E402

API_KEY = "k" * 8 + "-reliability-key"
_FUZZ_DIR = Path(tempfile.mkdtemp(prefix="procmem-fuzz-"))
atexit.register(shutil.rmtree, _FUZZ_DIR, True)


def _settings(tmp, **kw):
    return ServerSettings(embedder="hashing", db=str(tmp / "store.sqlite3"), data_dir=tmp / "data", **kw)


def _fuzz_app():
    settings = _settings(_FUZZ_DIR, api_key=API_KEY, max_body_bytes=64 * 1024)
    memory = build_memory(settings)  # passed in, so no lifespan shutdown closes it between calls
    app = create_app(memory, settings=settings)
    memory.add({"id": "seed", "name": "seed procedure", "steps": ["git pull", "make"]})
    memory.update("seed", steps=["git pull", "make", "make test"])
    memory.learn_session(["git pull", "make", "make test"], "success", session_id="seed-session")
    memory.save(_FUZZ_DIR / "data" / "export.jsonl")
    return app


fuzz_app = _fuzz_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


def _structured_errors(ctx, response, case):
    """Every 4xx is the service's JSON error shape, naming a type and a message."""
    if response.status_code >= 400:
        body = json.loads(response.content)
        err = body.get("error")
        assert isinstance(err, dict) and err.get("type") and err.get("message"), body
        assert "Traceback" not in response.text


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_openapi_fuzz_no_server_errors_and_structured_errors(case):
    if isinstance(case.body, dict) and isinstance(case.body.get("filepath"), str):
        # (a component over NAME_MAX bytes, or a path over PATH_MAX, is LONG_FILEPATH below)
        case.body["filepath"] = "/".join(part[:60] for part in case.body["filepath"][:1000].split("/"))
    if isinstance(case.query, dict) and isinstance(case.query.get("offset"), int):
        case.query["offset"] = min(case.query["offset"], 2**62)  # beyond 2**63 is HUGE_OFFSET below
    case.call_and_validate(
        headers={"X-API-Key": API_KEY},
        checks=[not_a_server_error, content_type_conformance, response_schema_conformance, _structured_errors],
    )


@pytest.mark.parametrize("task", [None, "", "build the project"])
def test_predict_with_an_empty_context_is_not_a_500(task):
    """Found by the fuzz (IndexError in NextActionPredictor._suggest on an empty history); fixed."""
    from fastapi.testclient import TestClient

    client = TestClient(fuzz_app, headers={"X-API-Key": API_KEY})
    body = {"current_context": []} if task is None else {"current_context": [], "task": task}
    r = client.post("/predict", json=body)
    assert r.status_code < 500, r.text


# --------------------------------------------------------------------------- direct attacks


@pytest.fixture
def service(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text(
        json.dumps({"format": "procmem-export", "version": 1}) + "\n"
        + json.dumps({"type": "procedure", "current": {"id": "stolen", "name": "stolen"}}) + "\n"
    )
    app = create_app(settings=_settings(tmp_path, api_key=API_KEY, max_body_bytes=4096))
    app.state.memory.add({"id": "mine", "name": "mine", "steps": ["a"]})
    client = httpx.Client(transport=httpx.ASGITransport(app=app), base_url="http://test",
                          headers={"X-API-Key": API_KEY})
    # httpx's ASGITransport is async-only for sync clients in some versions: fall back to TestClient
    try:
        client.get("/health")
    except Exception:
        from fastapi.testclient import TestClient

        client = TestClient(app, headers={"X-API-Key": API_KEY})
    yield client, app, tmp_path, outside
    app.state.memory.close()


def _snapshot_dir(path):
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*") if p.is_file())


TRAVERSALS = [
    "../outside/secret.jsonl",
    "../../outside/secret.jsonl",
    "sub/../../outside/secret.jsonl",
    "..",
    ".",
    "",
    "/etc/passwd",
    "{outside}/secret.jsonl",
    "~/secret.jsonl",
    "../store.sqlite3",
    "link-out/secret.jsonl",
    "link-file.jsonl",
    "ok\x00../../outside/secret.jsonl",
    "a" * 5000,
]


@pytest.mark.parametrize("raw", TRAVERSALS)
def test_save_and_load_never_leave_the_data_dir(service, raw):
    client, app, tmp, outside = service
    data_dir = tmp / "data"
    (data_dir / "link-out").symlink_to(outside, target_is_directory=True)
    (data_dir / "link-file.jsonl").symlink_to(outside / "secret.jsonl")
    filepath = raw.format(outside=outside)
    before_outside = _snapshot_dir(outside)
    before_tmp = {p.name for p in tmp.iterdir()}
    for route in ("/save", "/load"):
        r = client.post(route, json={"filepath": filepath})
        assert r.status_code in (403, 404, 413, 422), (route, filepath, r.status_code, r.text)
        assert r.json()["error"]["type"]
    assert _snapshot_dir(outside) == before_outside
    assert {p.name for p in tmp.iterdir()} == before_tmp
    assert "stolen" not in [p.id for p in app.state.memory.store.list()]


HUGE_OFFSET = (
    "GET /procedures?offset=9223372036854775808 is a 500: the query parameter has ge=0 but no upper "
    "bound, and SQLiteStore.list binds it as an SQLite INTEGER (OverflowError, not caught by _read); "
    "bound it (le=2**63-1) in the route, and have SQLiteStore._read turn OverflowError into StorageError"
)


def test_a_huge_offset_is_a_4xx(service):
    client, *_ = service
    r = client.get("/procedures", params={"offset": 2**63, "limit": 1})
    assert r.status_code < 500, r.text


LONG_FILEPATH = (
    "/save with a filepath whose component is longer than NAME_MAX (255 bytes) is a 500: "
    "memory.save raises OSError(ENAMETOOLONG) from os.replace, which no handler maps; FileRequest "
    "should limit each path component (or the route should turn OSError into a 422 naming filepath)"
)


def test_a_too_long_file_name_is_a_4xx(service):
    client, *_ = service
    r = client.post("/save", json={"filepath": "a" * 300 + ".jsonl"})
    assert r.status_code < 500, r.text


def test_save_and_load_inside_the_data_dir_work(service):
    client, app, tmp, _ = service
    r = client.post("/save", json={"filepath": "backups/one.jsonl"})
    assert r.status_code == 200, r.text
    assert (tmp / "data" / "backups" / "one.jsonl").is_file()
    r = client.post("/load", json={"filepath": str(tmp / "data" / "backups" / "one.jsonl")})
    assert r.status_code == 200, r.text


def test_save_never_overwrites_the_store_itself(tmp_path):
    """A data dir that contains the database: /save may not name the store's files."""
    settings = ServerSettings(embedder="hashing", db=str(tmp_path / "store.sqlite3"), data_dir=tmp_path,
                              api_key=API_KEY)
    app = create_app(settings=settings)
    app.state.memory.add({"id": "mine", "name": "mine"})
    from fastapi.testclient import TestClient

    client = TestClient(app, headers={"X-API-Key": API_KEY})
    for name in ("store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm", "./store.sqlite3"):
        r = client.post("/save", json={"filepath": name})
        assert r.status_code == 403, (name, r.text)
        r = client.post("/load", json={"filepath": name})
        assert r.status_code in (403, 404), (name, r.text)
    assert app.state.memory.store.integrity_check() == "ok"
    assert [p.id for p in app.state.memory.list()] == ["mine"]
    app.state.memory.close()


def test_load_of_hostile_files_in_the_data_dir_is_a_4xx_and_changes_nothing(service):
    client, app, tmp, _ = service
    import pickle

    memory = app.state.memory
    before = [p.model_dump_json() for p in memory.store.list()]
    files = {
        "pickle.jsonl": pickle.dumps({"format": "procmem-export"}),
        "binary.jsonl": os.urandom(2048),
        "noheader.jsonl": b'{"type": "procedure", "current": {"name": "x"}}\n',
        "bad.jsonl": json.dumps({"format": "procmem-export", "version": 1}).encode() + b"\n{not json\n",
    }
    for name, content in files.items():
        (tmp / "data" / name).write_bytes(content)
        r = client.post("/load", json={"filepath": name})
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        assert r.json()["error"]["type"]
    assert [p.model_dump_json() for p in memory.store.list()] == before


@pytest.mark.parametrize("size", [4097, 64 * 1024, 2 * 1024 * 1024])
def test_oversized_bodies_are_refused_with_413(service, size):
    client, app, *_ = service
    body = json.dumps({"actions": ["x" * size], "session_outcome": "success"})
    r = client.post("/learn", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["type"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit must hold on the streamed bytes too
        data = body.encode()
        for i in range(0, len(data), 1024):
            yield data[i : i + 1024]

    r = client.post("/learn", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert app.state.memory.store.count_sessions() == 0


def test_a_lying_content_length_is_refused(service):
    client, *_ = service
    r = client.post("/learn", content=b'{"actions": ["a"]}', headers={"Content-Type": "application/json",
                                                                   "Content-Length": "999999999"})
    assert r.status_code in (400, 413), r.text


ROUTES = [
    ("GET", "/stats", None),
    ("POST", "/learn", {"actions": ["a"]}),
    ("POST", "/predict", {"current_context": ["a"]}),
    ("GET", "/patterns", None),
    ("POST", "/save", {"filepath": "x.jsonl"}),
    ("POST", "/load", {"filepath": "x.jsonl"}),
    ("POST", "/procedures", {"name": "n"}),
    ("GET", "/procedures", None),
    ("GET", "/procedures/mine", None),
    ("PUT", "/procedures/mine", {"name": "n"}),
    ("PATCH", "/procedures/mine", {"name": "n"}),
    ("DELETE", "/procedures/mine", None),
    ("GET", "/procedures/mine/versions", None),
    ("POST", "/procedures/mine/rollback", {"version": 1}),
    ("POST", "/search", {"query": "a"}),
    ("POST", "/outcomes", {"procedure_id": "mine", "success": True}),
]


@pytest.mark.parametrize("key", [None, "", "wrong-key-wrong-key", API_KEY[:-1], API_KEY + "x", API_KEY.upper(),
                                 " " + API_KEY, API_KEY + "\u00e9"])
def test_missing_or_wrong_api_key_is_401_everywhere(service, key):
    client, app, *_ = service
    before = [p.model_dump_json() for p in app.state.memory.store.list()]
    client.headers.pop("X-API-Key", None)
    headers = {"X-API-Key": key.encode("utf-8")} if key is not None else {}
    for method, path, body in ROUTES:
        r = client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (method, path, key, r.status_code, r.text)
        assert r.json()["error"]["type"] == "unauthorized"
    assert [p.model_dump_json() for p in app.state.memory.store.list()] == before
    assert not any((app.state.settings.resolved_data_dir()).iterdir())


def test_the_right_key_is_accepted_and_health_needs_none(service):
    client, *_ = service
    assert client.get("/stats").status_code == 200
    client.headers.pop("X-API-Key", None)
    assert client.get("/health").status_code == 200
    r = client.get("/stats")
    assert r.status_code == 401 and "X-API-Key" in r.json()["error"]["message"]
    assert r.headers.get("WWW-Authenticate")


def test_no_route_reveals_server_paths(service):
    client, app, tmp, _ = service
    for path in ("/stats", "/procedures", "/openapi.json"):
        assert str(tmp) not in client.get(path).text
    r = client.post("/save", json={"filepath": "x.jsonl"})
    assert r.status_code == 200 and str(tmp) not in r.text
