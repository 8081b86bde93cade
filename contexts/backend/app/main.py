"""Task API: FastAPI application served by `uvicorn app.main:app`."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Iterator

from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from . import __version__
from .auth import require_writer
from .db import TITLE_MAX_LENGTH, Task, init_db, make_engine, ping
from .settings import Settings

# uvicorn configures this logger; messages show up next to its own.
log = logging.getLogger("uvicorn.error").getChild("tasks")


class TaskCreate(BaseModel):
    title: str = Field(min_length=1, max_length=TITLE_MAX_LENGTH)
    done: bool = False


class TaskUpdate(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=TITLE_MAX_LENGTH)
    done: bool | None = None


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    done: bool
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _assume_utc(cls, value: datetime) -> datetime:
        # SQLite drops the timezone; timestamps are always stored in UTC.
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class _Database:
    """Engine plus lazy table creation (the database may come up after us)."""

    def __init__(self, settings: Settings) -> None:
        self.engine = make_engine(settings.database_url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._ready = False
        self._lock = threading.Lock()

    def ensure_tables(self) -> None:
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                init_db(self.engine)
                self._ready = True


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database: _Database = app.state.database
        log.info(
            "database backend: %s; integrations: %s",
            settings.database_backend,
            ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in settings.integrations().items()),
        )
        try:
            database.ensure_tables()
        except SQLAlchemyError as exc:
            # Do not crash: /readyz reports 503 and retries until the DB is reachable.
            log.warning("database not reachable at startup (%s); will retry", type(exc).__name__)
        yield
        database.engine.dispose()

    app = FastAPI(title="slipway reference task API", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.database = _Database(settings)

    def get_session(request: Request) -> Iterator[Session]:
        database: _Database = request.app.state.database
        try:
            database.ensure_tables()
        except SQLAlchemyError:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "Database unavailable.") from None
        with database.sessions() as session:
            yield session

    def get_task_or_404(session: Session, task_id: int) -> Task:
        task = session.get(Task, task_id)
        if task is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"Task {task_id} not found.")
        return task

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process is up. Does not touch the database."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(request: Request, response: Response) -> dict[str, str]:
        """Readiness: the database is reachable (and tables exist)."""
        database: _Database = request.app.state.database
        try:
            ping(database.engine)
            database.ensure_tables()
        except SQLAlchemyError as exc:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
            return {"status": "unavailable", "database": type(exc).__name__}
        return {"status": "ready"}

    @app.get("/api/info", tags=["info"])
    def info() -> dict[str, Any]:
        """Which integrations are configured: booleans only, never the values."""
        return {
            "name": "slipway-reference-backend",
            "version": __version__,
            "database": settings.database_backend,
            "integrations": settings.integrations(),
        }

    @app.get("/api/tasks", response_model=list[TaskOut], tags=["tasks"])
    def list_tasks(session: Session = Depends(get_session)) -> list[Task]:
        return list(session.scalars(select(Task).order_by(Task.id)))

    @app.post(
        "/api/tasks",
        response_model=TaskOut,
        status_code=status.HTTP_201_CREATED,
        tags=["tasks"],
        dependencies=[Depends(require_writer)],
    )
    def create_task(body: TaskCreate, session: Session = Depends(get_session)) -> Task:
        task = Task(title=body.title, done=body.done)
        session.add(task)
        session.commit()
        session.refresh(task)
        return task

    @app.get("/api/tasks/{task_id}", response_model=TaskOut, tags=["tasks"])
    def get_task(task_id: int, session: Session = Depends(get_session)) -> Task:
        return get_task_or_404(session, task_id)

    @app.patch(
        "/api/tasks/{task_id}",
        response_model=TaskOut,
        tags=["tasks"],
        dependencies=[Depends(require_writer)],
    )
    def update_task(task_id: int, body: TaskUpdate, session: Session = Depends(get_session)) -> Task:
        task = get_task_or_404(session, task_id)
        if body.title is not None:
            task.title = body.title
        if body.done is not None:
            task.done = body.done
        session.commit()
        session.refresh(task)
        return task

    @app.post(
        "/api/tasks/{task_id}/toggle",
        response_model=TaskOut,
        tags=["tasks"],
        dependencies=[Depends(require_writer)],
    )
    def toggle_task(task_id: int, session: Session = Depends(get_session)) -> Task:
        task = get_task_or_404(session, task_id)
        task.done = not task.done
        session.commit()
        session.refresh(task)
        return task

    @app.delete(
        "/api/tasks/{task_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["tasks"],
        dependencies=[Depends(require_writer)],
    )
    def delete_task(task_id: int, session: Session = Depends(get_session)) -> Response:
        task = get_task_or_404(session, task_id)
        session.delete(task)
        session.commit()
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return app


app = create_app()
