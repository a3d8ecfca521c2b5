"""Self-service accounts: passwords and login sessions, in the accounts file next to the users.

A login opens a session: a short-lived access token (an ordinary API token of ``Accounts``, so it
works on every route and a revocation or expiry acts on the next request) and a longer-lived
refresh token ``cor_<prefix>_<secret>`` (not a bearer token: ``Accounts`` refuses it). A refresh
rotates both (the old access token is revoked, the old refresh token stops working); a logout
revokes the session's access token and its refresh token. Passwords and refresh tokens are stored
only as salted scrypt hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass

from ..core.errors import InvalidRequestError, StorageError
from ..storage.sqlite import open_shared
from .accounts import Accounts, NewToken, User

__all__ = ["Sessions", "Session"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS passwords (
    user_name TEXT PRIMARY KEY, hash BLOB NOT NULL, salt BLOB NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, user_name TEXT NOT NULL, refresh_prefix TEXT NOT NULL UNIQUE, refresh_hash BLOB NOT NULL,
    refresh_salt BLOB NOT NULL, refresh_expires_at REAL NOT NULL, access_prefix TEXT NOT NULL,
    created_at REAL NOT NULL, revoked_at REAL);
CREATE INDEX IF NOT EXISTS sessions_access ON sessions(access_prefix);
"""
_BUSY_TIMEOUT_S = 10.0
_REFRESH = re.compile(r"cor_([0-9a-f]{12})_[A-Za-z0-9_-]{20,200}")
_ACCESS_PREFIX = re.compile(r"cok_([0-9a-f]{12})_")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}  # as the tokens': ~16 MB and tens of ms per hash
_DUMMY_SALT = secrets.token_bytes(16)


@dataclass(frozen=True)
class Session:
    """The tokens of a login or a refresh; both are shown once."""

    user: str
    access: NewToken
    refresh_token: str
    refresh_expires_at: float

    def __repr__(self) -> str:  # the secrets stay out of logs and tracebacks
        return f"Session(user={self.user!r}, access=cok_{self.access.info.prefix}…, refresh='cor_…')"


class Sessions:
    """Passwords and login sessions on ``accounts``' file."""

    def __init__(self, accounts: Accounts, *, access_ttl_s: float = 900.0, refresh_ttl_s: float = 14 * 86400.0) -> None:
        if not access_ttl_s > 0 or not refresh_ttl_s > 0:
            raise InvalidRequestError(f"token lifetimes must be positive, got {access_ttl_s!r} and {refresh_ttl_s!r} s")
        self.accounts = accounts
        self.access_ttl_s, self.refresh_ttl_s = float(access_ttl_s), float(refresh_ttl_s)
        self._lock = threading.Lock()
        try:
            self._db = open_shared(accounts.path, _SCHEMA, _BUSY_TIMEOUT_S)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the server's accounts file {accounts.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"Sessions({str(self.accounts.path)!r}, access_ttl_s={self.access_ttl_s}, refresh_ttl_s={self.refresh_ttl_s})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def register(self, name: str, password: str) -> User:
        """A new (not admin) user with a password; InvalidRequestError if the name is taken or invalid."""
        user = self.accounts.add_user(name)
        salt = secrets.token_bytes(16)
        with self._lock:
            self._db.execute("INSERT INTO passwords VALUES (?, ?, ?, ?)", (name, _hash(password, salt), salt, time.time()))
        return user

    def check_password(self, name: str, password: str) -> bool:
        """Whether ``name`` has this password; as slow for an unknown name as for a known one."""
        with self._lock:
            row = self._db.execute("SELECT hash, salt FROM passwords WHERE user_name = ?", (name,)).fetchone()
        if row is None:
            _hash(password, _DUMMY_SALT)
            return False
        return hmac.compare_digest(_hash(password, bytes(row[1])), bytes(row[0])) and self.accounts.user(name) is not None

    def login(self, name: str) -> Session:
        """Open a session for ``name`` (whose password was checked)."""
        access = self.accounts.create_token(name, expires_in_s=self.access_ttl_s)
        refresh, prefix, salt = _new_refresh()
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                             (secrets.token_hex(16), name, prefix, _hash(refresh, salt), salt,
                              now + self.refresh_ttl_s, access.info.prefix, now))
        return Session(name, access, refresh, now + self.refresh_ttl_s)

    def refresh(self, refresh_token: str) -> Session | None:
        """New tokens for the session of an active refresh token (the old ones stop working), else None."""
        match = _REFRESH.fullmatch(refresh_token)
        if match is None:
            return None
        old = match.group(1)
        with self._lock:
            row = self._db.execute("SELECT id, user_name, refresh_hash, refresh_salt, refresh_expires_at, access_prefix "
                                   "FROM sessions WHERE refresh_prefix = ? AND revoked_at IS NULL", (old,)).fetchone()
        if row is None or row[4] <= time.time() or self.accounts.user(row[1]) is None:
            return None
        if not hmac.compare_digest(_hash(refresh_token, bytes(row[3])), bytes(row[2])):
            return None
        access = self.accounts.create_token(row[1], expires_in_s=self.access_ttl_s)
        refresh, prefix, salt = _new_refresh()
        expires = time.time() + self.refresh_ttl_s
        with self._lock:  # only one of two concurrent refreshes with the same token wins
            won = self._db.execute(
                "UPDATE sessions SET refresh_prefix = ?, refresh_hash = ?, refresh_salt = ?, refresh_expires_at = ?, "
                "access_prefix = ? WHERE id = ? AND refresh_prefix = ? AND revoked_at IS NULL",
                (prefix, _hash(refresh, salt), salt, expires, access.info.prefix, row[0], old)).rowcount == 1
        self.accounts.revoke(access.info.prefix if not won else row[5])
        return Session(row[1], access, refresh, expires) if won else None

    def logout(self, access_token: str) -> None:
        """Revoke an access token and, if a login issued it, its session's refresh token."""
        match = _ACCESS_PREFIX.match(access_token)
        if match is None:
            return
        with self._lock:
            self._db.execute("UPDATE sessions SET revoked_at = ? WHERE access_prefix = ? AND revoked_at IS NULL",
                             (time.time(), match.group(1)))
        self.accounts.revoke(match.group(1))


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode("utf-8", "surrogatepass"), salt=salt, **_SCRYPT)


def _new_refresh() -> tuple[str, str, bytes]:
    prefix = secrets.token_hex(6)
    return f"cor_{prefix}_{secrets.token_urlsafe(32)}", prefix, secrets.token_bytes(16)
