"""Bearer-token (JWT, HS256) authentication for write routes.

Tokens are signed with JWT_SECRET. To make one (the secret is read from the
environment, never from the command line):

    JWT_SECRET=... python -m app.auth --sub demo --ttl 3600
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

ALGORITHM = "HS256"

_bearer = HTTPBearer(auto_error=False)


def create_token(secret: str, subject: str = "demo", ttl_seconds: int | None = 3600) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now}
    if ttl_seconds is not None:
        claims["exp"] = now + ttl_seconds
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(token: str, secret: str) -> dict[str, Any]:
    return jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub"]})


def require_writer(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> dict[str, Any]:
    """Dependency for write routes: returns the token's claims."""
    secret = request.app.state.settings.jwt_secret
    if secret is None:
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="Write operations are disabled: JWT_SECRET is not configured on the server.",
        )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Missing bearer token.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return decode_token(credentials.credentials, secret)
    except jwt.PyJWTError:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Invalid or expired token.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print an HS256 JWT signed with $JWT_SECRET.")
    parser.add_argument("--sub", default="demo", help="subject claim (default: demo)")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds; 0 = no expiry")
    args = parser.parse_args(argv)
    secret = os.environ.get("JWT_SECRET", "").strip()
    if not secret:
        print("JWT_SECRET is not set", file=sys.stderr)
        return 2
    print(create_token(secret, args.sub, args.ttl or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
