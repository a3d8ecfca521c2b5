"""The self-service flow, off unless ``serve --allow-register``: ``POST /auth/register``,
``/auth/login``, ``/auth/refresh`` and ``/auth/logout`` (see ``sessions.py`` for the tokens).

Failed logins are throttled per user name and per client address (``FailureThrottle``): past the
limit, a login is a 429 with ``Retry-After`` and its password is not checked. A wrong password
and an unknown name get the same 401. Registrations are limited per client address (every
attempt with a valid body counts, taken names included): past the limit, a 429.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from ..core.errors import InvalidRequestError
from .accounts import Accounts
from .auth import Caller
from .sessions import Session, Sessions
from .throttle import FailureThrottle

__all__ = ["SelfService", "install", "router"]

router = APIRouter(prefix="/auth", tags=["auth"])


@dataclass(frozen=True)
class SelfService:
    """Settings of the self-service flow: token lifetimes and the failed-login limits (per ``window_s``)."""

    access_ttl_s: float = 900.0
    refresh_ttl_s: float = 14 * 86400.0
    failures_per_name: int = 5
    failures_per_address: int = 20
    window_s: float = 60.0
    registrations_per_address: int = 20  # per registration_window_s
    registration_window_s: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("access_ttl_s", "refresh_ttl_s", "failures_per_name", "failures_per_address", "window_s",
                     "registrations_per_address", "registration_window_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidRequestError(f"SelfService.{name} must be a positive number, got {value!r}")


def install(app: FastAPI, accounts: Accounts, settings: SelfService) -> Sessions:
    """Add the ``/auth`` routes to ``app``; the caller closes the returned ``Sessions``."""
    sessions = Sessions(accounts, access_ttl_s=settings.access_ttl_s, refresh_ttl_s=settings.refresh_ttl_s)
    app.state.sessions = sessions
    app.state.login_throttles = (FailureThrottle(settings.failures_per_name, settings.window_s),
                                 FailureThrottle(settings.failures_per_address, settings.window_s))
    app.state.register_throttle = FailureThrottle(settings.registrations_per_address, settings.registration_window_s)
    app.include_router(router)
    return sessions


class RegisterRequest(BaseModel):
    """``POST /auth/register``: a new user name and its password."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$",
                      description="1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    password: str = Field(min_length=8, max_length=1024)


class LoginRequest(BaseModel):
    """``POST /auth/login``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(BaseModel):
    """``POST /auth/refresh``: the refresh token of the last login or refresh."""

    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=300)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _sessions(request: Request) -> Sessions:
    return request.app.state.sessions


def _tokens(session: Session, sessions: Sessions) -> dict[str, Any]:
    return {"user": session.user, "token_type": "bearer", "access_token": session.access.token,
            "expires_in": sessions.access_ttl_s, "refresh_token": session.refresh_token,
            "refresh_expires_in": sessions.refresh_ttl_s}


@router.post("/register", status_code=201)
def register(request: Request, body: RegisterRequest) -> dict[str, Any]:
    """Create a user (never an admin) with a password; then log in. Limited per client address."""
    throttle: FailureThrottle = request.app.state.register_throttle
    address = _address(request)
    if wait := throttle.retry_after(address):
        raise HTTPException(429, "too many registrations from this address: try again later",
                            headers={"Retry-After": str(wait)})
    throttle.fail(address)
    try:
        user = _sessions(request).register(body.name, body.password)
    except InvalidRequestError as exc:
        if "already exists" in str(exc):
            raise HTTPException(409, f"the name {body.name!r} is taken") from None
        raise
    return {"user": user.name, "admin": user.admin}


@router.post("/login")
def login(request: Request, body: LoginRequest) -> dict[str, Any]:
    """An access token (short-lived, ``expires_in`` seconds) and a refresh token for a name and password."""
    by_name, by_address = request.app.state.login_throttles
    keys = ((by_name, body.name), (by_address, _address(request)))
    wait = max(throttle.retry_after(key) for throttle, key in keys)
    if wait:
        raise HTTPException(429, "too many failed logins: try again later", headers={"Retry-After": str(wait)})
    sessions = _sessions(request)
    if not sessions.check_password(body.name, body.password):
        for throttle, key in keys:
            throttle.fail(key)
        raise HTTPException(401, "wrong name or password")
    return _tokens(sessions.login(body.name), sessions)


@router.post("/refresh")
def refresh(request: Request, body: RefreshRequest) -> dict[str, Any]:
    """New tokens for a refresh token; the old access and refresh tokens stop working."""
    sessions = _sessions(request)
    session = sessions.refresh(body.refresh_token)
    if session is None:
        raise HTTPException(401, "the refresh token is unknown, expired, used or revoked")
    return _tokens(session, sessions)


@router.post("/logout")
def logout(request: Request, user: Caller) -> dict[str, Any]:
    """Revoke the request's token (and its login's refresh token): both are refused from now on."""
    token = request.headers["authorization"].partition(" ")[2].strip()
    _sessions(request).logout(token)
    return {"user": user.name, "revoked": True}
