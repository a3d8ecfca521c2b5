"""Bearer authentication: every route but ``/health`` depends on ``caller``."""

from __future__ import annotations

import sqlite3
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .accounts import Accounts, User

__all__ = ["caller", "Caller", "readable_user"]

_bearer = HTTPBearer(auto_error=False, description="an API token from `cognitionos-kit tokens create NAME`")


def caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> User:
    """The user of the request's bearer token; 401 (with ``WWW-Authenticate``) for none or a bad one."""
    if credentials is None:
        raise HTTPException(401, "an API token is required: Authorization: Bearer <token>",
                            headers={"WWW-Authenticate": 'Bearer realm="cognitionos"'})
    accounts: Accounts = request.app.state.accounts
    try:
        user = accounts.authenticate(credentials.credentials)
    except sqlite3.Error as exc:
        raise HTTPException(503, f"the server's accounts file could not be read: {exc}") from None
    if user is None:
        raise HTTPException(401, "the token is unknown, expired or revoked",
                            headers={"WWW-Authenticate": 'Bearer realm="cognitionos", error="invalid_token"'})
    return user


Caller = Annotated[User, Depends(caller)]


def readable_user(user: User, asked: str | None) -> str | None:
    """Whose rows a caller may read: their own; an admin anyone's (``asked``) or all (None)."""
    if user.admin:
        return asked
    if asked is not None and asked != user.name:
        raise HTTPException(403, "only an admin may read another user's rows")
    return user.name
