"""API tests: health, readiness, CRUD, auth. Run: python -m pytest contexts/backend/tests

Set TEST_DATABASE_URL=postgresql://... to run the CRUD test against PostgreSQL too.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta

import jwt
import pytest
from fastapi.testclient import TestClient

from app.auth import create_token
from app.db import normalize_url
from app.main import create_app
from app.settings import Settings

SECRET = "test-jwt-secret-" + "0123456789abcdef" * 4  # 80 bytes: long enough for HS512 too
OPENAI = "sk-test-openai-value-should-never-leak"
BETTER_AUTH = "better-auth-value-should-never-leak"


def make_client(tmp_path, **env: str) -> TestClient:
    base = {"SQLITE_PATH": str(tmp_path / "tasks.db")}
    base.update(env)
    return TestClient(create_app(Settings.from_env(base)))


def auth(secret: str = SECRET, **kw) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(secret, **kw)}"}


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path, JWT_SECRET=SECRET) as c:
        yield c


def database_urls() -> list[str]:
    urls = ["sqlite"]
    if os.environ.get("TEST_DATABASE_URL"):
        urls.append(os.environ["TEST_DATABASE_URL"])
    return urls


# --- health -----------------------------------------------------------------


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_healthz_does_not_need_database():
    app = create_app(Settings.from_env({"DATABASE_URL": "postgresql://u:p@127.0.0.1:1/none"}))
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200


def test_readyz_ok(client):
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready"}


def test_readyz_database_unreachable():
    # Nothing listens on port 1: the connection is refused at once.
    url = "postgresql://user:hunter2@127.0.0.1:1/tasks"
    with TestClient(create_app(Settings.from_env({"DATABASE_URL": url}))) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable"
        assert "hunter2" not in r.text
        # Data routes report the outage too, instead of a 500.
        assert c.get("/api/tasks").status_code == 503


# --- CRUD -------------------------------------------------------------------


@pytest.mark.parametrize("db", database_urls())
def test_crud_flow(tmp_path, db):
    env = {"JWT_SECRET": SECRET}
    if db != "sqlite":
        env["DATABASE_URL"] = db
    with make_client(tmp_path, **env) as c:
        h = auth()
        before = {t["id"] for t in c.get("/api/tasks").json()}

        r = c.post("/api/tasks", json={"title": "write the Dockerfile"}, headers=h)
        assert r.status_code == 201, r.text
        task = r.json()
        assert task["title"] == "write the Dockerfile"
        assert task["done"] is False
        created = datetime.fromisoformat(task["created_at"].replace("Z", "+00:00"))
        assert created.utcoffset() == timedelta(0)
        tid = task["id"]

        listed = c.get("/api/tasks").json()
        assert [t["id"] for t in listed if t["id"] not in before] == [tid]

        assert c.get(f"/api/tasks/{tid}").json() == task

        r = c.patch(f"/api/tasks/{tid}", json={"done": True}, headers=h)
        assert r.status_code == 200
        assert r.json()["done"] is True
        assert r.json()["title"] == "write the Dockerfile"

        r = c.patch(f"/api/tasks/{tid}", json={"title": "ship it"}, headers=h)
        assert r.json() == {**task, "title": "ship it", "done": True}

        r = c.post(f"/api/tasks/{tid}/toggle", headers=h)
        assert r.status_code == 200
        assert r.json()["done"] is False

        r = c.delete(f"/api/tasks/{tid}", headers=h)
        assert r.status_code == 204
        assert c.get(f"/api/tasks/{tid}").status_code == 404
        assert {t["id"] for t in c.get("/api/tasks").json()} == before


def test_list_is_ordered(client):
    h = auth()
    ids = [client.post("/api/tasks", json={"title": f"t{i}"}, headers=h).json()["id"] for i in range(3)]
    assert [t["id"] for t in client.get("/api/tasks").json()] == ids


def test_not_found(client):
    h = auth()
    assert client.get("/api/tasks/9999").status_code == 404
    assert client.patch("/api/tasks/9999", json={"done": True}, headers=h).status_code == 404
    assert client.post("/api/tasks/9999/toggle", headers=h).status_code == 404
    assert client.delete("/api/tasks/9999", headers=h).status_code == 404


def test_validation(client):
    h = auth()
    assert client.post("/api/tasks", json={"title": ""}, headers=h).status_code == 422
    assert client.post("/api/tasks", json={}, headers=h).status_code == 422
    assert client.post("/api/tasks", json={"title": "x" * 201}, headers=h).status_code == 422


def test_data_persists_across_restarts(tmp_path):
    with make_client(tmp_path, JWT_SECRET=SECRET) as c:
        c.post("/api/tasks", json={"title": "survives"}, headers=auth())
    with make_client(tmp_path, JWT_SECRET=SECRET) as c:
        assert [t["title"] for t in c.get("/api/tasks").json()] == ["survives"]


# --- auth -------------------------------------------------------------------


def test_write_without_token_is_401(client):
    r = client.post("/api/tasks", json={"title": "nope"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/api/tasks").json() == []


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-jwt",
        "Basic dXNlcjpwYXNz",
        f"Bearer {create_token('some-other-secret-0123456789abcdef')}",
        f"Bearer {create_token(SECRET, ttl_seconds=-10)}",  # expired
        "Bearer " + jwt.encode({"sub": "x"}, SECRET, algorithm="HS512"),  # wrong algorithm
        "Bearer " + jwt.encode({"iat": int(time.time())}, SECRET, algorithm="HS256"),  # no sub
    ],
)
def test_write_with_bad_token_is_401(client, header):
    h = {"Authorization": header}
    assert client.post("/api/tasks", json={"title": "nope"}, headers=h).status_code == 401
    assert client.get("/api/tasks").json() == []


def test_all_write_routes_need_token(client):
    tid = client.post("/api/tasks", json={"title": "mine"}, headers=auth()).json()["id"]
    assert client.patch(f"/api/tasks/{tid}", json={"done": True}).status_code == 401
    assert client.post(f"/api/tasks/{tid}/toggle").status_code == 401
    assert client.delete(f"/api/tasks/{tid}").status_code == 401
    assert client.get(f"/api/tasks/{tid}").json()["done"] is False


def test_writes_disabled_without_jwt_secret(tmp_path):
    with make_client(tmp_path) as c:
        r = c.post("/api/tasks", json={"title": "nope"}, headers=auth())
        assert r.status_code == 503
        assert "JWT_SECRET" in r.json()["detail"]
        # Reads stay open.
        assert c.get("/api/tasks").status_code == 200
        assert c.get("/api/tasks").json() == []


# --- info and secrets -------------------------------------------------------


def test_info_reports_booleans_only(tmp_path):
    env = {"JWT_SECRET": SECRET, "OPENAI_API_KEY": OPENAI, "BETTER_AUTH_SECRET": BETTER_AUTH}
    with make_client(tmp_path, **env) as c:
        r = c.get("/api/info")
        assert r.status_code == 200
        body = r.json()
        assert body["database"] == "sqlite"
        assert body["integrations"] == {"jwt_auth": True, "openai": True, "better_auth": True}
        for value in env.values():
            assert value not in r.text
    with make_client(tmp_path) as c:
        integrations = c.get("/api/info").json()["integrations"]
        assert integrations == {"jwt_auth": False, "openai": False, "better_auth": False}


def test_secrets_never_logged(tmp_path, caplog):
    caplog.set_level("DEBUG")
    env = {
        "JWT_SECRET": SECRET,
        "OPENAI_API_KEY": OPENAI,
        "BETTER_AUTH_SECRET": BETTER_AUTH,
        "DATABASE_URL": "postgresql://user:hunter2@127.0.0.1:1/tasks",
    }
    with make_client(tmp_path, **env) as c:
        c.get("/readyz")
        c.get("/api/info")
    for value in (SECRET, OPENAI, BETTER_AUTH, "hunter2"):
        assert value not in caplog.text
    settings = Settings.from_env(env)
    for value in (SECRET, OPENAI, BETTER_AUTH):
        assert value not in repr(settings)


# --- settings ---------------------------------------------------------------


def test_settings_default_to_sqlite_under_tmp():
    s = Settings.from_env({})
    assert s.database_url == "sqlite:////tmp/tasks.db"
    assert s.database_backend == "sqlite"
    assert s.jwt_secret is None


def test_settings_sqlite_path_and_postgres():
    assert Settings.from_env({"SQLITE_PATH": "/data/t.db"}).database_url == "sqlite:////data/t.db"
    s = Settings.from_env({"DATABASE_URL": "postgresql://u:p@db:5432/tasks", "JWT_SECRET": " "})
    assert s.database_backend == "postgresql"
    assert s.jwt_secret is None  # blank counts as unset


def test_normalize_url():
    assert normalize_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalize_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalize_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalize_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
