"""Configuration, read from the environment once per application instance.

Secrets (JWT_SECRET, OPENAI_API_KEY, BETTER_AUTH_SECRET, the password inside
DATABASE_URL) are kept here and must never be logged or returned by the API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

DEFAULT_SQLITE_PATH = "/tmp/tasks.db"


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


@dataclass(frozen=True)
class Settings:
    # SQLAlchemy URL actually used (PostgreSQL when DATABASE_URL is set,
    # otherwise a SQLite file at SQLITE_PATH).
    database_url: str
    jwt_secret: str | None = field(default=None, repr=False)
    openai_api_key: str | None = field(default=None, repr=False)
    better_auth_secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        database_url = _get(env, "DATABASE_URL")
        if database_url is None:
            sqlite_path = _get(env, "SQLITE_PATH") or DEFAULT_SQLITE_PATH
            database_url = f"sqlite:///{sqlite_path}"
        return cls(
            database_url=database_url,
            jwt_secret=_get(env, "JWT_SECRET"),
            openai_api_key=_get(env, "OPENAI_API_KEY"),
            better_auth_secret=_get(env, "BETTER_AUTH_SECRET"),
        )

    @property
    def database_backend(self) -> str:
        """'postgresql' or 'sqlite': safe to log and to show."""
        scheme = self.database_url.split(":", 1)[0].split("+", 1)[0]
        return "postgresql" if scheme in ("postgres", "postgresql") else scheme

    def integrations(self) -> dict[str, bool]:
        """Which integrations are configured, as booleans only."""
        return {
            "jwt_auth": self.jwt_secret is not None,
            "openai": self.openai_api_key is not None,
            "better_auth": self.better_auth_secret is not None,
        }
