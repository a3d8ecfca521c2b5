"""Budgets and rate limits kept in Redis, for a team whose processes run on several machines
(``Kit(guards="redis://host:6379/0")`` or ``COGNITIONOS_GUARDS``), through ``redis-py``.

The same operations as ``local.LocalGuards``, each one atomic on the server: a reservation is one
Lua script that reads the budgets applying to the user, checks every window and holds the worst
case in all of them, or holds nothing (scripts run one at a time, so no other client can slip
between the check and the hold). Rate-limit slots are booked the same way, timed by the server's
clock so machines whose clocks differ still space their calls.

Keys (under ``prefix``, ``cognitionos:`` unless the URL says ``?prefix=``):
``budgets`` (hash: scope/name/period -> limit), ``team:<t>`` and ``user_teams:<u>`` (sets),
``tally:<budget>/<window>`` (hash: ``spent``, and ``held:<process>`` / ``touched:<process>`` per
process, so what a dead process held can be released), ``limits`` (hash: key -> JSON),
``rate:<key>:<kind>`` (the next free slot), ``pause:<provider>`` (a 429's Retry-After).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from ..storage.redis_cache import command, connect
from .local import HOLD_S, HOST, BudgetKey, Refusal, alive, pause_row

__all__ = ["RedisGuards"]

_SEP = "\x1f"  # between scope, name and period in a budget's field name (user ids may hold any printable)
_TALLY_TTL_S = 400 * 86400  # a day's or a month's tallies go after a year and a month; "total" stays

# ARGV: prefix, user ("" none), usd, day, month, process, now, "1" to skip the stored budgets, then
# (field, limit) pairs of budgets given by the caller (an experiment run's). -> {} (nothing applies), {"ok", tally keys...} or
# {"refused", field, limit, spent, held}; a negative usd only asks whether any applies ({"applies"}).
# Numbers travel as strings: Lua numbers become integers.
_RESERVE = """
local p, user, usd, proc, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[6], ARGV[7]
local windows = {day = ARGV[4], month = ARGV[5], total = 'total'}
local teams = {}
if user ~= '' then
  for _, t in ipairs(redis.call('SMEMBERS', p .. 'user_teams:' .. user)) do teams[t] = true end
end
local apply = {}
local all = (ARGV[8] == '1') and {} or redis.call('HGETALL', p .. 'budgets')
for i = 1, #all, 2 do
  local f = all[i]
  local scope, name, period = string.match(f, '^([^\\31]*)\\31([^\\31]*)\\31([^\\31]*)$')
  if scope == 'kit' or (scope == 'user' and user ~= '' and name == user) or (scope == 'team' and teams[name]) then
    table.insert(apply, {f, tonumber(all[i + 1]), windows[period]})
  end
end
for i = 9, #ARGV, 2 do table.insert(apply, {ARGV[i], tonumber(ARGV[i + 1]), 'total'}) end
if #apply == 0 then return {} end
if usd < 0 then return {'applies'} end
local left = nil
for _, b in ipairs(apply) do
  local vals = redis.call('HGETALL', p .. 'tally:' .. b[1] .. '/' .. b[3])
  local spent, held = 0, 0
  for j = 1, #vals, 2 do
    local k = vals[j]
    if k == 'spent' then spent = spent + tonumber(vals[j + 1])
    elseif string.sub(k, 1, 5) == 'held:' then held = held + tonumber(vals[j + 1]) end
  end
  if spent + held + usd > b[2] * (1 + 1e-9) then
    return {'refused', b[1], tostring(b[2]), tostring(spent), tostring(held)}
  end
  local l = b[2] - spent - held - usd
  if left == nil or l < left then left = l end
end
local out = {'ok', tostring(left)}
for _, b in ipairs(apply) do
  local key = p .. 'tally:' .. b[1] .. '/' .. b[3]
  redis.call('HINCRBYFLOAT', key, 'held:' .. proc, usd)
  redis.call('HSET', key, 'touched:' .. proc, now)
  if b[3] ~= 'total' then redis.call('EXPIRE', key, TALLY_TTL) end
  table.insert(out, key)
end
return out
""".replace("TALLY_TTL", str(_TALLY_TTL_S))

# KEYS: tally keys; ARGV: process, held, real cost
_SETTLE = """
for _, key in ipairs(KEYS) do
  local left = tonumber(redis.call('HINCRBYFLOAT', key, 'held:' .. ARGV[1], -tonumber(ARGV[2])))
  if left <= 1e-12 then redis.call('HDEL', key, 'held:' .. ARGV[1]) end
  if tonumber(ARGV[3]) ~= 0 then redis.call('HINCRBYFLOAT', key, 'spent', ARGV[3]) end
end
return 1
"""

# ARGV: prefix, user, provider, model, tokens, max pause ("" none), then the names a pause may be under -> JSON {wait,
# limits, raise}. The generic cell rate algorithm of local.admit, on the server's clock; a
# provider's pause (a 429's Retry-After) delays it too.
_ADMIT = """
local p, user, provider, model, tokens = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local mine, costs, waiting = {}, {}, {}
local start = now
local raise = false
local pause, paused = 0, provider
for i = 7, #ARGV do
  local ends = tonumber(redis.call('GET', p .. 'pause:' .. ARGV[i]) or '0')
  if ends > pause then pause, paused = ends, ARGV[i] end
end
local all = redis.call('HGETALL', p .. 'limits')
for i = 1, #all, 2 do
  local lim = cjson.decode(all[i + 1])
  if (lim.user == nil or lim.user == user) and (lim.provider == nil or lim.provider == provider)
      and (lim.model == nil or lim.model == model) then
    for _, kind in ipairs({'req', 'tok'}) do
      local rate, n = lim.tpm, tokens
      if kind == 'req' then rate, n = lim.rpm, 1 end
      if rate ~= nil then
        local key = p .. 'rate:' .. all[i] .. ':' .. kind
        local tat = tonumber(redis.call('GET', key) or '0')
        if tat > start then start = tat end
        if tat > now then table.insert(waiting, all[i]); if lim.policy == 'raise' then raise = true end end
        table.insert(costs, {key, 60.0 / rate * n})
      end
    end
  end
end
if pause > start then start = pause end
if pause > now then table.insert(waiting, '#' .. paused) end
if ARGV[6] ~= '' and pause - now > tonumber(ARGV[6]) then
  return cjson.encode({wait = tostring(pause - now), limits = waiting, raise = false})
end
if start > now and raise then return cjson.encode({wait = tostring(start - now), limits = waiting, raise = true}) end
for _, c in ipairs(costs) do redis.call('SET', c[1], tostring(start + c[2]), 'EX', 86400) end
return cjson.encode({wait = tostring(start - now), limits = waiting, raise = false})
"""


class RedisGuards:
    """The budgets and rate limits of a team, in one Redis database; safe from threads and processes."""

    backend = "redis"
    # another machine's writes are not seen without asking: callers re-ask at least this often
    config_version = None
    _LIMITS_FRESH_S = 1.0

    def __init__(self, url: str) -> None:
        self.client, self.url, self.prefix = connect(url, decode_responses=True)
        self._reserve = self.client.register_script(_RESERVE)
        self._settle = self.client.register_script(_SETTLE)
        self._admit = self.client.register_script(_ADMIT)
        self._lock = threading.Lock()
        self.last_left = 0.0  # what the tightest budget had left after the last reservation
        self._limits_seen = (-1e18, False)  # (monotonic time asked, whether a limit or a pause exists)

    def _do(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        return command(self.client, self.url, what, fn, *args, **kw)

    @staticmethod
    def _field(key: BudgetKey | tuple) -> str:
        return _SEP.join(key)

    def _proc(self) -> str:
        return f"{HOST}:{os.getpid()}"

    # --- the shape LocalGuards has ---------------------------------------------------------------
    def exists(self) -> bool:
        return True

    def close(self) -> None:
        self.client.close()

    def any_budget(self) -> bool:
        """Always asked of the server (one round trip would cost what checking costs, and a budget
        set on another machine must hold from its next call)."""
        return True

    def has_limits(self) -> bool:
        """Whether a rate limit or a provider's pause exists (asked at most once a second)."""
        now = time.monotonic()
        if now - self._limits_seen[0] > self._LIMITS_FRESH_S:
            n = self._do("read the rate limits", self.client.exists, self.prefix + "limits", self.prefix + "paused")
            self._limits_seen = (now, bool(n))
        return self._limits_seen[1]

    def set_budget(self, key: BudgetKey, limit_usd: float | None, window: str, already_spent: float) -> None:
        field = self._field(key)
        pipe = self.client.pipeline(transaction=True)
        if limit_usd is None:
            pipe.hdel(self.prefix + "budgets", field)
        else:
            pipe.hset(self.prefix + "budgets", field, repr(float(limit_usd)))
            pipe.hset(f"{self.prefix}tally:{field}/{window}", "spent", repr(float(already_spent)))
        self._do("set a budget", pipe.execute)

    def set_team(self, team: str, user_ids: Iterable[str]) -> None:
        users = list(user_ids)
        old = self._do("read a team", self.client.smembers, f"{self.prefix}team:{team}")
        pipe = self.client.pipeline(transaction=True)
        for u in old:
            pipe.srem(f"{self.prefix}user_teams:{u}", team)
        pipe.delete(f"{self.prefix}team:{team}")
        for u in users:
            pipe.sadd(f"{self.prefix}user_teams:{u}", team)
        if users:
            pipe.sadd(f"{self.prefix}team:{team}", *users)
        self._do("set a team", pipe.execute)

    def team_members(self, team: str) -> list[str]:
        return sorted(self._do("read a team", self.client.smembers, f"{self.prefix}team:{team}"))

    def applies(self, user_id: str | None) -> bool:
        args = [self.prefix, user_id or "", "-1", "-", "-", "", "0", "0"]
        return bool(self._do("check the budgets", self._reserve, args=args))

    def reserve(self, user_id: str | None, usd: float, windows: dict[str, str],
                extra: Iterable[tuple[BudgetKey, float]] = (), *, only_extra: bool = False) -> list[tuple] | Refusal:
        args: list[Any] = [self.prefix, user_id or "", repr(float(usd)), windows["day"], windows["month"], self._proc(),
                           repr(time.time()), "1" if only_extra else "0"]
        for key, limit in extra:
            args += [self._field(key), repr(float(limit))]
        got = self._do("hold a budget", self._reserve, args=args)
        if got and got[0] == "refused" and self._reap():  # what dead processes held is free again
            got = self._do("hold a budget", self._reserve, args=args)
        if not got:
            return []
        if got[0] == "ok":
            self.last_left = float(got[1])
            return [(k,) for k in got[2:]]
        scope, name, period = got[1].split(_SEP)
        return Refusal(BudgetKey(scope, name, period), float(got[2]), float(got[3]), float(got[4]))

    def _reap(self) -> bool:
        """Release what exited processes of this machine, and processes silent for ``HOLD_S``, hold."""
        stale = time.time() - HOLD_S
        gone = False
        for key in self._do("read the budgets", lambda: list(self.client.scan_iter(self.prefix + "tally:*", count=500))):
            fields = self._do("read the budgets", self.client.hgetall, key)
            for f, v in fields.items():
                if not f.startswith("held:") or float(v) <= 0:
                    continue
                proc = f[5:]
                host, _, pid = proc.rpartition(":")
                touched = float(fields.get("touched:" + proc, 0) or 0)
                if touched < stale or (host == HOST and pid.isdigit() and int(pid) != os.getpid()
                                       and not alive(int(pid))):
                    self._do("release a hold", self.client.hdel, key, f)
                    gone = True
        return gone

    def settle(self, keys: list[tuple], held_usd: float, usd: float) -> None:
        if keys:
            self._do("settle a budget", self._settle, keys=[k[0] for k in keys],
                     args=[self._proc(), repr(float(held_usd)), repr(float(usd))])

    def tally(self, key: BudgetKey, window: str) -> tuple[float, float]:
        """(spent, held) of one budget window, over every process."""
        vals = self._do("read the budgets", self.client.hgetall, f"{self.prefix}tally:{self._field(key)}/{window}")
        return float(vals.get("spent", 0) or 0), sum(float(v) for k, v in vals.items() if k.startswith("held:"))

    def rows(self, windows: dict[str, str]) -> list[dict[str, Any]]:
        out = []
        budgets = self._do("read the budgets", self.client.hgetall, self.prefix + "budgets")
        for field in sorted(budgets):
            scope, name, period = field.split(_SEP)
            w = windows[period]
            vals = self._do("read the budgets", self.client.hgetall, f"{self.prefix}tally:{field}/{w}")
            spent = float(vals.get("spent", 0) or 0)
            held = sum(float(v) for k, v in vals.items() if k.startswith("held:"))
            out.append({"scope": scope, "name": name, "period": period, "window": w,
                        "limit_usd": float(budgets[field]), "spent_usd": spent, "reserved_usd": held})
        return out

    # --- rate limits --------------------------------------------------------------------------
    def set_rate_limit(self, key: str, scope: tuple[str | None, str | None, str | None], rpm: float | None,
                       tpm: float | None, policy: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(f"{self.prefix}rate:{key}:req", f"{self.prefix}rate:{key}:tok")
        if rpm is None and tpm is None:
            pipe.hdel(self.prefix + "limits", key)
        else:
            spec = {"user": scope[0], "provider": scope[1], "model": scope[2], "rpm": rpm, "tpm": tpm, "policy": policy}
            pipe.hset(self.prefix + "limits", key, json.dumps({k: v for k, v in spec.items() if v is not None}))
        self._do("set a rate limit", pipe.execute)
        self._limits_seen = (-1e18, False)

    def limit_rows(self) -> list[tuple]:
        got = self._do("read the rate limits", self.client.hgetall, self.prefix + "limits")
        rows = []
        for key in sorted(got):
            s = json.loads(got[key])
            rows.append((key, s.get("user"), s.get("provider"), s.get("model"), s.get("rpm"), s.get("tpm"), s["policy"]))
        return rows

    def admit(self, user_id: str | None, provider: str, model: str, tokens: int,
              paused_as: tuple[str, ...] = (), max_pause: float | None = None) -> tuple[float, list[tuple]]:
        got = json.loads(self._do("book a rate-limit slot", self._admit,
                                  args=[self.prefix, user_id or "\0", provider, model, str(int(tokens)),
                                        "" if max_pause is None else repr(float(max_pause)),
                                        *(paused_as or (provider,))]))
        wait = float(got["wait"])
        if wait <= 0:
            return 0.0, []
        rows = {r[0]: r for r in self.limit_rows()}
        # "#name" stands for a pause (a 429's Retry-After); a raise-policy limit makes the caller raise
        return wait, [pause_row(k[1:]) if k.startswith("#") else rows[k] for k in dict.fromkeys(got["limits"])
                      if k.startswith("#") or k in rows]

    def pause(self, provider: str, seconds: float) -> None:
        """Hold every call to ``provider`` (``openai``, or ``openai#<key fingerprint>``) for ``seconds``
        (its 429 said Retry-After), in every process."""
        server_now = self._do("pause a provider", self.client.time)
        until = repr(server_now[0] + server_now[1] / 1e6 + seconds)
        pipe = self.client.pipeline(transaction=True)
        pipe.set(f"{self.prefix}pause:{provider}", until, ex=max(1, int(seconds) + 1))
        pipe.set(f"{self.prefix}paused", "1", ex=max(1, int(seconds) + 1))  # has_limits: any pause at all
        self._do("pause a provider", pipe.execute)
        self._limits_seen = (-1e18, False)

