"""The admin commands behind ``cognitionos-kit users ...`` and ``tokens ...``: text for a terminal."""

from __future__ import annotations

import time

from .accounts import Accounts, TokenInfo

__all__ = ["add_user", "list_users", "create_token", "revoke_token", "list_tokens"]


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _state(t: TokenInfo) -> str:
    return "revoked" if t.revoked_at is not None else "active" if t.active else "expired"


def add_user(accounts: Accounts, name: str, *, admin: bool) -> list[str]:
    user = accounts.add_user(name, admin=admin)
    return [f"added {'admin ' if user.admin else ''}user {user.name}",
            f"give them a token with: cognitionos-kit tokens create {user.name} --home {accounts.path.parent}"]


def list_users(accounts: Accounts) -> list[str]:
    lines = [f"{'user':<24} {'admin':<6} {'active tokens':<14} created"]
    for u in accounts.users():
        active = sum(t.active for t in accounts.tokens(u.name))
        lines.append(f"{u.name:<24} {'yes' if u.admin else 'no':<6} {active:<14} {_when(u.created_at)}")
    return lines


def create_token(accounts: Accounts, user: str, *, expires_in_days: float | None) -> list[str]:
    """The token itself is the last line (for scripts: ``| tail -n 1``)."""
    new = accounts.create_token(user, expires_in_s=None if expires_in_days is None else expires_in_days * 86400)
    expires = "never expires" if new.info.expires_at is None else f"expires {_when(new.info.expires_at)}"
    return [f"token cok_{new.info.prefix}… for {user}, {expires}; "
            "it is shown only now (stored hashed):", new.token]


def revoke_token(accounts: Accounts, token_or_prefix: str) -> list[str]:
    info = accounts.revoke(token_or_prefix)
    return [f"revoked token cok_{info.prefix}… of {info.user}"]


def list_tokens(accounts: Accounts, user: str | None) -> list[str]:
    lines = [f"{'prefix':<20} {'user':<24} {'state':<8} {'created':<24} expires"]
    for t in accounts.tokens(user):
        lines.append(f"cok_{t.prefix:<16} {t.user:<24} {_state(t):<8} {_when(t.created_at):<24} {_when(t.expires_at)}")
    return lines
