"""Database access: SQLAlchemy 2 engine and the Task model."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from sqlalchemy import Boolean, DateTime, Integer, String, create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TITLE_MAX_LENGTH = 200


class Base(DeclarativeBase):
    pass


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(TITLE_MAX_LENGTH), nullable=False)
    done: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=_utcnow
    )


def normalize_url(url: str) -> str:
    """Map postgres:// and postgresql:// to the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(database_url: str) -> Engine:
    url = make_url(normalize_url(database_url))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            parent = os.path.dirname(os.path.abspath(url.database))
            os.makedirs(parent, exist_ok=True)
        return create_engine(url, connect_args={"check_same_thread": False})
    # Fail fast when the server is unreachable so /readyz answers promptly.
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 3})


def init_db(engine: Engine) -> None:
    """Create tables that do not exist yet."""
    Base.metadata.create_all(engine)


def ping(engine: Engine) -> None:
    """Raise if the database cannot be reached."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
