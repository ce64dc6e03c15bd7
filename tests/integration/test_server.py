"""The HTTP service over real HTTP: uvicorn on a free loopback port, httpx as the client."""

from __future__ import annotations

import concurrent.futures
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from procmem import ProceduralMemory  # noqa: E402
from procmem.embeddings import HashingEmbedder  # noqa: E402
from procmem.errors import ConfigurationError  # noqa: E402
from procmem.server import ServerSettings, create_app, serve  # noqa: E402

pytestmark = pytest.mark.integration

KEY = "k" * 8 + "-test-key-0123456789"
GIT = ["git status", "git add .", "git commit -m update"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """uvicorn serving an app in a background thread of the test process."""

    def __init__(self, app) -> None:
        self.port = _free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def memory(tmp_path):
    m = ProceduralMemory(path=tmp_path / "store.sqlite3", embedder=HashingEmbedder())
    yield m
    m.close()


@pytest.fixture
def base_url(memory, data_dir):
    settings = ServerSettings(data_dir=data_dir, max_body_bytes=64 * 1024)
    with ThreadServer(create_app(memory, settings=settings)) as url:
        yield url


@pytest.fixture
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


def _assert_error(resp: httpx.Response, status: int, type_: str, field: str | None = "__any__") -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["type"] == type_ and err["message"]
    if field != "__any__":
        assert err["field"] == field, err
    return err


# ---------------------------------------------------------------- seed 001


def test_learn_predict_patterns_health_stats(client):
    assert client.get("/health").json()["status"] == "ok"
    for _ in range(3):
        r = client.post(
            "/learn",
            json={"session_commands": [{"command": c} for c in GIT], "session_outcome": "success"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["actions"] == 3
    r = client.post("/learn", json={"session_commands": GIT, "session_outcome": None, "task": "commit work"})
    assert r.status_code == 200, r.text
    r = client.post("/predict", json={"current_context": ["git status", "git add ."], "top_k": 3})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert preds and preds[0]["action"] == "git commit -m update"
    assert {"action", "confidence", "reason", "suggestions"} <= set(preds[0])
    assert 0.0 <= preds[0]["confidence"] <= 1.0
    # Observed rates: 3 of the 3 sessions with a known outcome succeeded (not a smoothed 80 %).
    assert preds[0]["success_rate"] == 1.0 and "3 of 3 sessions succeeded" in preds[0]["reason"]
    patterns = client.get("/patterns", params={"min_count": 2}).json()["patterns"]
    assert patterns and all(p["success_rate"] == 1.0 for p in patterns)
    stats = client.get("/stats").json()
    assert stats["sessions"] == 4 and "path" not in stats
    # The service loads the vector indexes at start-up (a small store: exact scans, no graph).
    assert stats["vector_index"]["procedures"] == {"loaded": True, "vectors": stats["procedures"], "hnsw": False}
    other = client.get("/stats", headers={"X-Procmem-Namespace": "someone-else"}).json()
    assert other["sessions"] == 0


def test_learn_multi_turn_session(client):
    body = {"session_commands": ["ls()", "du()"], "session_outcome": "success",
            "instructions": ["list the files", "show the disk usage"], "turns": [0, 1]}
    r = client.post("/learn", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["actions"] == 2
    bad = client.post("/learn", json={**body, "turns": [0, 5]})
    assert bad.status_code in (400, 422), bad.text
    assert "turns" in bad.text
    assert client.post("/learn", json={**body, "instructions": None}).status_code in (400, 422)


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc").status_code == 200  # seed 001 lists both Swagger UI and ReDoc
    spec = client.get("/openapi.json").json()
    for path in ("/learn", "/predict", "/patterns", "/save", "/load", "/procedures/{procedure_id}/rollback"):
        assert path in spec["paths"]


# ---------------------------------------------------------------- procedures


def test_procedure_crud_versions_rollback_outcomes_search(client):
    r = client.post(
        "/procedures",
        json={
            "id": "deploy",
            "name": "deploy app",
            "kind": "workflow",
            "description": "ship the application",
            "steps": ["git pull", "make build", {"step": "release", "action": "make deploy"}],
            "tags": ["ops"],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and r.json()["steps"][2]["name"] == "release"
    _assert_error(client.post("/procedures", json={"id": "deploy", "name": "again"}), 409, "conflict", "id")

    got = client.get("/procedures/deploy").json()
    assert got["name"] == "deploy app"
    r = client.patch("/procedures/deploy", json={"description": "ship it carefully", "note": "more care"})
    assert r.status_code == 200 and r.json()["version"] == 2
    r = client.put("/procedures/deploy", json={"name": "deploy app", "steps": ["make deploy"], "kind": "workflow"})
    assert r.status_code == 200 and r.json()["version"] == 3 and r.json()["description"] == ""
    versions = client.get("/procedures/deploy/versions").json()["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[1]["note"] == "more care"
    r = client.post("/procedures/deploy/rollback", json={"version": 1})
    assert r.status_code == 200 and r.json()["version"] == 4
    assert r.json()["description"] == "ship the application"
    _assert_error(client.post("/procedures/deploy/rollback", json={"version": 9}), 404, "not_found")

    r = client.post("/outcomes", json={"procedure_id": "deploy", "success": True, "duration": 2.5})
    assert r.status_code == 200 and r.json()["stats"]["successes"] == 1
    r = client.post("/outcomes", json={"procedure_id": "deploy", "success": False, "error": "boom"})
    assert r.json()["stats"]["failures"] == 1
    _assert_error(client.post("/outcomes", json={"procedure_id": "nope", "success": True}), 404, "not_found")

    client.post("/procedures", json={"name": "run tests", "kind": "tool", "description": "pytest -q"})
    hits = client.post("/search", json={"query": "deploy the application", "k": 2}).json()["results"]
    assert hits[0]["procedure"]["id"] == "deploy"
    tools = client.post("/search", json={"query": "deploy", "k": 5, "kinds": ["tool"]}).json()["results"]
    assert all(h["procedure"]["kind"] == "tool" for h in tools)
    important = client.post("/search", json={"query": "deploy the application", "min_importance": 0.99})
    assert important.status_code == 200 and important.json()["results"] == []  # both are 0.5
    _assert_error(client.post("/search", json={"query": "deploy", "min_importance": 2}), 422, "validation_error")
    listed = client.get("/procedures", params={"kind": "workflow"}).json()
    assert [p["id"] for p in listed["procedures"]] == ["deploy"] and listed["total"] == 2

    # namespaces are isolated
    _assert_error(client.get("/procedures/deploy", params={"namespace": "other"}), 404, "not_found")
    assert client.post("/search", json={"query": "deploy"}, params={"namespace": "other"}).json()["results"] == []

    assert client.delete("/procedures/deploy").json() == {"id": "deploy", "deleted": True}
    _assert_error(client.get("/procedures/deploy"), 404, "not_found")
    _assert_error(client.delete("/procedures/deploy"), 404, "not_found")


# ---------------------------------------------------------------- save / load and paths


def test_save_load_round_trip(client, data_dir):
    client.post("/procedures", json={"id": "p1", "name": "backup database", "steps": ["pg_dump db"]})
    for _ in range(2):
        client.post("/learn", json={"session_commands": GIT, "session_outcome": "success"})
    r = client.post("/save", json={"filepath": "exports/mem.jsonl"})
    assert r.status_code == 200, r.text
    assert r.json() == {"filepath": "exports/mem.jsonl", "records": 3}
    first = (data_dir / "exports" / "mem.jsonl").read_text().splitlines()[0]
    assert '"procmem-export"' in first
    r = client.post("/load", json={"filepath": "exports/mem.jsonl"}, headers={"X-Procmem-Namespace": "copy"})
    assert r.status_code == 200, r.text
    assert r.json() == {"filepath": "exports/mem.jsonl", "procedures": 1, "sessions": 2}
    copy = client.get("/stats", params={"namespace": "copy"}).json()
    assert copy["procedures"] >= 1 and copy["sessions"] == 2
    r = client.post("/predict", json={"current_context": ["git status", "git add ."]}, params={"namespace": "copy"})
    assert r.json()["predictions"][0]["action"] == "git commit -m update"


def test_load_refuses_pickle_and_missing_files(client, data_dir):
    import pickle

    (data_dir / "memory.pkl").write_bytes(pickle.dumps({"patterns": [1, 2, 3]}))
    _assert_error(client.post("/load", json={"filepath": "memory.pkl"}), 422, "validation_error")
    _assert_error(client.post("/load", json={"filepath": "missing.jsonl"}), 404, "not_found", "filepath")


@pytest.mark.parametrize("path", ["../escape.jsonl", "/tmp/procedural_memory.pkl", "a/../../b.jsonl", ".", ""])
def test_path_traversal_refused(client, path, data_dir):
    for endpoint in ("/save", "/load"):
        r = client.post(endpoint, json={"filepath": path})
        if path == "":
            _assert_error(r, 422, "validation_error", "filepath")
        else:
            _assert_error(r, 403, "forbidden_path", "filepath")
    assert not (data_dir.parent / "escape.jsonl").exists()


def test_symlink_escaping_data_dir_refused(client, data_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (data_dir / "link").symlink_to(outside, target_is_directory=True)
    _assert_error(client.post("/save", json={"filepath": "link/mem.jsonl"}), 403, "forbidden_path", "filepath")
    assert list(outside.iterdir()) == []


def test_save_refuses_the_store_file(tmp_path):
    memory = ProceduralMemory(path=tmp_path / "store.sqlite3", embedder=HashingEmbedder())
    with ThreadServer(create_app(memory, settings=ServerSettings(data_dir=tmp_path))) as url:
        r = httpx.post(f"{url}/save", json={"filepath": "store.sqlite3"})
    _assert_error(r, 403, "forbidden_path", "filepath")
    memory.close()


# ---------------------------------------------------------------- limits and errors


def test_oversized_body_refused(client):
    big = {"session_commands": ["x" * 1000] * 100}  # ~100 KB > the 64 KiB limit of this server
    _assert_error(client.post("/learn", json=big), 413, "payload_too_large")

    def chunks():  # no Content-Length: the streamed size is counted
        for _ in range(100):
            yield b"x" * 1024

    r = client.post("/learn", content=chunks(), headers={"Content-Type": "application/json"})
    _assert_error(r, 413, "payload_too_large")
    assert client.get("/health").status_code == 200  # the server is fine


def test_list_and_field_limits(client):
    r = client.post("/predict", json={"current_context": ["a"] * 1001})
    err = _assert_error(r, 422, "validation_error", "current_context")
    assert "1000" in err["message"]
    _assert_error(
        client.post("/predict", json={"current_context": ["a"], "top_k": 0}), 422, "validation_error", "top_k"
    )


def test_structured_errors(client):
    _assert_error(client.post("/learn", json={"session_commands": []}), 422, "validation_error", "session_commands")
    err = _assert_error(
        client.post("/learn", json={"session_commands": GIT, "session_outcome": "maybe"}), 422, "validation_error"
    )
    assert err["field"].startswith("session_outcome")
    _assert_error(client.post("/learn", json={"session_commands": GIT, "bogus": 1}), 422, "validation_error", "bogus")
    r = client.post("/learn", content=b"{not json", headers={"Content-Type": "application/json"})
    _assert_error(r, 422, "validation_error")
    _assert_error(client.get("/no/such/route"), 404, "not_found")
    _assert_error(client.get("/learn"), 405, "method_not_allowed")
    _assert_error(client.patch("/procedures/x", json={}), 404, "not_found")
    client.post("/procedures", json={"id": "x", "name": "x"})
    _assert_error(client.patch("/procedures/x", json={}), 422, "validation_error")
    _assert_error(client.patch("/procedures/x", json={"importance": 2}), 422, "validation_error", "importance")
    err = _assert_error(client.patch("/procedures/x", json={"steps": [{"bogus": 1}]}), 422, "validation_error")
    assert "steps" in err["field"]
    r = client.get("/stats", params={"namespace": "a"}, headers={"X-Procmem-Namespace": "b"})
    _assert_error(r, 422, "validation_error", "namespace")


def test_bad_or_missing_body_is_named_as_such(client):
    # A JSON syntax error's location ends with a character offset: it was reported as field "1".
    r = client.post("/search", content=b"{bad json", headers={"Content-Type": "application/json"})
    err = _assert_error(r, 422, "validation_error", None)
    assert err["message"].startswith("request body is not valid JSON: ") and "property name" in err["message"]
    err = _assert_error(client.post("/search"), 422, "validation_error", None)
    assert err["message"] == "request body: Field required"


# ---------------------------------------------------------------- API key and binding


def test_api_key_required_when_set(memory, data_dir):
    settings = ServerSettings(data_dir=data_dir, api_key=KEY)
    with ThreadServer(create_app(memory, settings=settings)) as url, httpx.Client(base_url=url) as c:
        assert c.get("/health").status_code == 200  # liveness stays open
        _assert_error(c.get("/stats"), 401, "unauthorized", "X-API-Key")
        _assert_error(c.get("/stats", headers={"X-API-Key": KEY[:-1] + "x"}), 401, "unauthorized")
        _assert_error(c.post("/predict", json={"current_context": []}), 401, "unauthorized")
        assert c.get("/stats", headers={"X-API-Key": KEY}).status_code == 200
        r = c.get("/stats", headers={"X-API-Key": KEY})
        assert r.json()["procedures"] == 0


def test_non_loopback_bind_without_key_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("PROCMEM_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="API key"):
        serve(host="0.0.0.0", port=_free_port(), embedder="hashing", data_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="16 characters"):
        serve(host="0.0.0.0", port=_free_port(), api_key="short", embedder="hashing", data_dir=tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PROCMEM_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "procmem.server", "--host", "0.0.0.0", "--embedder", "hashing"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2 and "API key" in proc.stderr


# ---------------------------------------------------------------- two processes, one SQLite file


def _start_process(tmp_path: Path, db: Path, port: int, workers: int = 1) -> subprocess.Popen:
    env = {**os.environ, "PROCMEM_EMBEDDER": "hashing", "PROCMEM_DB": str(db), "PROCMEM_DATA_DIR": str(tmp_path)}
    env.pop("PROCMEM_API_KEY", None)
    cmd = [sys.executable, "-m", "procmem.server", "--port", str(port), "--log-level", "warning"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become healthy")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_two_processes_share_one_sqlite_file_without_losing_writes(tmp_path):
    db = tmp_path / "shared.sqlite3"
    ports = [_free_port(), _free_port()]
    procs = [_start_process(tmp_path, db, p) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            _wait_healthy(url, proc)
        n = 40

        def write(i: int) -> tuple[int, int]:
            url = urls[i % 2]
            with httpx.Client(base_url=url, timeout=60) as c:
                a = c.post("/procedures", json={"id": f"p{i}", "name": f"procedure {i}", "steps": [f"step {i}"]})
                b = c.post(
                    "/learn",
                    json={"session_commands": [f"cmd{i} a", f"cmd{i} b"], "session_outcome": "success"},
                )
                return a.status_code, b.status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(write, range(n)))
        assert codes == [(201, 200)] * n
        for url in urls:
            stats = httpx.get(f"{url}/stats", timeout=30).json()
            assert stats["procedures"] == n and stats["sessions"] == n
        # a session learned through one process is predicted by the other
        for _ in range(3):
            httpx.post(f"{urls[0]}/learn", json={"session_commands": ["make", "make test", "make deploy"]}, timeout=30)
        r = httpx.post(f"{urls[1]}/predict", json={"current_context": ["make", "make test"]}, timeout=30)
        assert r.json()["predictions"][0]["action"] == "make deploy"
    finally:
        for proc in procs:
            _stop(proc)


def test_workers_two(tmp_path):
    port = _free_port()
    proc = _start_process(tmp_path, tmp_path / "w.sqlite3", port, workers=2)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            codes = list(
                pool.map(
                    lambda i: httpx.post(f"{url}/procedures", json={"id": f"w{i}", "name": f"w {i}"}, timeout=60),
                    range(30),
                )
            )
        assert [c.status_code for c in codes] == [201] * 30
        assert httpx.get(f"{url}/stats", timeout=30).json()["procedures"] == 30
    finally:
        _stop(proc)
