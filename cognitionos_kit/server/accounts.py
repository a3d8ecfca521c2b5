"""The team server's users and API tokens, in ``<home>/server_accounts.sqlite``.

A token is ``cok_<prefix>_<secret>``: the 12-character prefix is stored as it is (to find the row
and to name the token in lists and revocations), the whole token only as a salted scrypt hash.
SQLite (WAL, through ``storage.sqlite.open_shared``) lets the admin's CLI add users and revoke
tokens while the server runs; the server reads the row on every request, so a revocation or an
expiry takes effect on the next one.
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
from pathlib import Path

from ..core.errors import InvalidRequestError, StorageError
from ..storage.sqlite import open_shared

__all__ = ["Accounts", "User", "TokenInfo", "NewToken", "ACCOUNTS_FILE"]

ACCOUNTS_FILE = "server_accounts.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, admin INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    prefix TEXT PRIMARY KEY, user_name TEXT NOT NULL REFERENCES users(name), hash BLOB NOT NULL,
    salt BLOB NOT NULL, created_at REAL NOT NULL, expires_at REAL, revoked_at REAL);
"""
_BUSY_TIMEOUT_S = 10.0
_PREFIX_LEN = 12
_TOKEN = re.compile(rf"cok_([0-9a-f]{{{_PREFIX_LEN}}})_[A-Za-z0-9_-]{{20,200}}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# scrypt as the stdlib offers it (RFC 7914's interactive cost): ~16 MB and tens of ms per hash
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


@dataclass(frozen=True)
class User:
    """A user of the team server; ``name`` is the ``user_id`` of their ledger rows."""

    name: str
    admin: bool
    created_at: float


@dataclass(frozen=True)
class TokenInfo:
    """What is stored about a token (never the token itself)."""

    prefix: str
    user: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        """Neither revoked nor expired."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > time.time())


@dataclass(frozen=True)
class NewToken:
    """A token just created: ``token`` is shown once and cannot be recovered later."""

    token: str
    info: TokenInfo

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"NewToken(prefix={self.info.prefix!r}, user={self.info.user!r}, token='cok_…')"


class Accounts:
    """Users and hashed tokens of one data folder (``home``)."""

    def __init__(self, home: str | Path) -> None:
        self.path = Path(home) / ACCOUNTS_FILE
        self._lock = threading.Lock()
        # tokens this process has checked against their hash: HMAC under a key of this process
        # only, so a request costs one row read rather than one scrypt
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        try:
            self._db = open_shared(self.path, _SCHEMA, _BUSY_TIMEOUT_S)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the server's accounts file {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the accounts file."""
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"Accounts({str(self.path)!r})"

    # --- users --------------------------------------------------------------------------
    def add_user(self, name: str, *, admin: bool = False) -> User:
        """Add a user; the name (letters, digits, ``. _ @ -``, up to 64) must be new."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidRequestError(
                f"a user name is 1 to 64 letters, digits, '.', '_', '@' or '-' (starting with a letter or digit), got {name!r}")
        user = User(name, bool(admin), time.time())
        try:
            with self._lock:
                self._db.execute("INSERT INTO users VALUES (?, ?, ?)", (user.name, int(user.admin), user.created_at))
        except sqlite3.IntegrityError:
            raise InvalidRequestError(f"the user {name!r} already exists") from None
        return user

    def user(self, name: str) -> User | None:
        """The user called ``name``, or None."""
        with self._lock:
            row = self._db.execute("SELECT name, admin, created_at FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else User(row[0], bool(row[1]), row[2])

    def users(self) -> list[User]:
        """Every user, by name."""
        with self._lock:
            rows = self._db.execute("SELECT name, admin, created_at FROM users ORDER BY name").fetchall()
        return [User(r[0], bool(r[1]), r[2]) for r in rows]

    # --- tokens -------------------------------------------------------------------------
    def create_token(self, user: str, *, expires_in_s: float | None = None) -> NewToken:
        """A new random token for ``user`` (valid for ``expires_in_s`` seconds, or until revoked)."""
        if self.user(user) is None:
            raise InvalidRequestError(f"no user {user!r}: add it first (cognitionos-kit users add {user} --home ...)")
        if expires_in_s is not None and not expires_in_s > 0:
            raise InvalidRequestError(f"a token's lifetime must be positive, got {expires_in_s!r} s")
        prefix = secrets.token_hex(_PREFIX_LEN // 2)
        token = f"cok_{prefix}_{secrets.token_urlsafe(32)}"
        salt = secrets.token_bytes(16)
        now = time.time()
        info = TokenInfo(prefix, user, now, None if expires_in_s is None else now + expires_in_s, None)
        with self._lock:
            self._db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, NULL)",
                             (prefix, user, _hash(token, salt), salt, info.created_at, info.expires_at))
        return NewToken(token, info)

    def revoke(self, token_or_prefix: str) -> TokenInfo:
        """Revoke a token named by itself or by its prefix (``cok_<prefix>`` or the bare 12 characters);
        revoking a revoked token again changes nothing."""
        prefix = _prefix_of(token_or_prefix)
        with self._lock:
            self._db.execute("UPDATE tokens SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL",
                             (time.time(), prefix))
        info = self._token(prefix) if prefix else None
        if info is None:
            raise InvalidRequestError(f"no token with the prefix {prefix or token_or_prefix!r}")
        return info

    def tokens(self, user: str | None = None) -> list[TokenInfo]:
        """Every token (of ``user``), oldest first: prefixes and dates, never a token."""
        query = "SELECT prefix, user_name, created_at, expires_at, revoked_at FROM tokens"
        with self._lock:
            rows = self._db.execute(query + (" WHERE user_name = ?" if user else "") + " ORDER BY created_at",
                                    (user,) if user else ()).fetchall()
        return [TokenInfo(*r) for r in rows]

    def authenticate(self, token: str) -> User | None:
        """The user of an active (known, unrevoked, unexpired) token, else None."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        prefix = match.group(1)
        with self._lock:
            row = self._db.execute(
                "SELECT t.hash, t.salt, t.expires_at, t.revoked_at, u.name, u.admin, u.created_at "
                "FROM tokens t JOIN users u ON u.name = t.user_name WHERE t.prefix = ?", (prefix,)).fetchone()
        if row is None or row[3] is not None or (row[2] is not None and row[2] <= time.time()):
            return None
        stored, salt = bytes(row[0]), bytes(row[1])
        mac = hmac.digest(self._key, token.encode(), "sha256")
        known = self._verified.get(prefix)
        if known is None or not hmac.compare_digest(known, mac):
            if not hmac.compare_digest(_hash(token, salt), stored):
                return None
            self._verified[prefix] = mac
        return User(row[4], bool(row[5]), row[6])

    def _token(self, prefix: str) -> TokenInfo | None:
        with self._lock:
            row = self._db.execute("SELECT prefix, user_name, created_at, expires_at, revoked_at FROM tokens "
                                   "WHERE prefix = ?", (prefix,)).fetchone()
        return None if row is None else TokenInfo(*row)


def _hash(token: str, salt: bytes) -> bytes:
    return hashlib.scrypt(token.encode(), salt=salt, **_SCRYPT)


def _prefix_of(token_or_prefix: str) -> str:
    s = token_or_prefix.strip()
    if s.startswith("cok_"):
        s = s[4:]
    return s[:_PREFIX_LEN] if len(s) >= _PREFIX_LEN else ""
