"""An offline stand-in for a real LLM: deterministic, counted with the real tokenizer, with a
configurable latency model and failures that can be injected for tests and demos.

Its answers are assembled from templates around the prompt's own key words, so they read
plausibly and are visibly marked "(simulated)": nobody should mistake them for a model's output.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ...core.errors import ConfigurationError, InvalidRequestError, ProviderError
from ...core.types import SAMPLING_NAMES, ProviderRequest, ProviderResponse, Sampling, ToolCall, Usage
from .. import tokens
from ..facts import FACTS_OUTPUT, simulated_facts
from ..structured import example_value
from .base import Provider, StreamItem
from .http import current_attempt
from .script import Script

FAILURE_KINDS = {
    # kind: (HTTP status or None, moves on)
    "rate_limit": (429, True),
    "server_error": (500, True),
    "overloaded": (529, True),
    "timeout": (None, True),
    "connection_error": (None, True),
    "auth_error": (401, True),
    "invalid_request": (400, False),
}


@dataclass(frozen=True)
class LatencyModel:
    """latency = (base + input tokens x per_input + output tokens x per_output) x lognormal jitter.

    ``scale=0`` makes calls instant (tests); the defaults feel like a fast hosted model, sped up.
    """

    base_ms: float = 25.0
    per_input_token_ms: float = 0.01
    per_output_token_ms: float = 0.8
    jitter: float = 0.35  # sigma of the lognormal factor
    scale: float = 1.0

    def sample(self, rng: random.Random, prompt_tokens: int, completion_tokens: int) -> float:
        if self.scale <= 0:
            return 0.0
        mean = self.base_ms + prompt_tokens * self.per_input_token_ms + completion_tokens * self.per_output_token_ms
        return mean * math.exp(rng.gauss(0.0, self.jitter)) * self.scale


@dataclass(frozen=True)
class _Failure:
    kind: str
    mid_stream: bool = False


class SimulatedProvider(Provider):
    """Deterministic offline provider: same seed and request, same answer, usage and latency."""

    name = "simulated"
    price_id = "simulated"
    bounds_deadline = True  # its sleeps stop at the attempt's deadline
    temperature_range = (0.0, 2.0)
    accepts = frozenset(SAMPLING_NAMES)  # all of them, so offline runs exercise every setting

    def __init__(
        self,
        *,
        name: str | None = None,
        seed: int = 0,
        latency: LatencyModel | None = None,
        failure_rate: float = 0.0,
        failure_kind: str = "rate_limit",
    ) -> None:
        if name:
            self.name = name  # a second simulated provider (e.g. a flaky one) for fallback demos
        if failure_kind not in FAILURE_KINDS:
            raise ConfigurationError(f"failure_kind must be one of {sorted(FAILURE_KINDS)}, not {failure_kind!r}")
        if not 0.0 <= failure_rate <= 1.0:
            raise ConfigurationError(f"failure_rate must be within [0, 1], got {failure_rate}")
        self.seed = seed
        self.latency = latency or LatencyModel()
        self.failure_rate = failure_rate
        self.failure_kind = failure_kind
        self._failure_rng = random.Random(seed)
        self._scheduled: deque[_Failure] = deque()
        self._prompt_cache: set[str] = set()
        self._lock = threading.Lock()
        self.calls = 0
        self.canned: Script | None = None  # canned answers (script())

    def script(self, answers: Any) -> SimulatedProvider:
        """Answer from canned answers (see ``Script``); ``None`` goes back to composed answers.
        Returns the provider, so ``kit.simulated.script({...})`` reads as one line."""
        self.canned = None if answers is None else answers if isinstance(answers, Script) else Script(answers)
        return self

    @contextmanager
    def scripted(self, answers: Any) -> Iterator[SimulatedProvider]:
        """``with kit.simulated.scripted({...}):`` canned answers inside the block only."""
        before = self.canned
        self.script(answers)
        try:
            yield self
        finally:
            self.canned = before

    @property
    def cache_name(self) -> str:
        """The name an experiment's response cache keys answers by: a scripted provider's answers
        are not its composed ones, so each script has its own."""
        return self.name if self.canned is None else f"{self.name}#{self.canned.digest}"

    def fail_next(self, n: int = 1, kind: str = "rate_limit", *, mid_stream: bool = False) -> None:
        """Make the next ``n`` calls fail with ``kind`` (mid_stream: after some text, streams only)."""
        if kind not in FAILURE_KINDS:
            raise InvalidRequestError(f"kind must be one of {sorted(FAILURE_KINDS)}, not {kind!r}")
        with self._lock:
            self._scheduled.extend(_Failure(kind, mid_stream) for _ in range(n))

    # --- the answer ---------------------------------------------------------------------
    def _plan(self, req: ProviderRequest) -> tuple[ProviderResponse, float, _Failure | None]:
        with self._lock:
            self.calls += 1
            failure = self._scheduled.popleft() if self._scheduled else None
            if failure is None and self.failure_rate and self._failure_rng.random() < self.failure_rate:
                failure = _Failure(self.failure_kind)
        parts = (self.seed, req.model, req.system, req.messages, req.max_tokens, req.temperature)
        key = repr(parts if req.seed is None else parts + (req.seed,))
        if req.sampling is not None:
            key += repr(req.sampling)
        rng = random.Random(hashlib.sha256(key.encode()).digest())
        s = req.sampling
        call = _tool_call(req, s, rng, key) if s is not None and s.tools else None
        canned = self.canned.answer(req) if self.canned is not None and call is None else None
        if call is not None:
            text = ""
        elif canned is not None:
            text = canned
        elif req.messages and req.messages[-1].role == "tool":
            text = _tool_answer(req)
        elif s is not None and s.output is not None and s.output.name == FACTS_OUTPUT:  # kit.memory.remember
            text = simulated_facts(req.messages[-1].content if req.messages else "")
        elif s is not None and s.output is not None:
            text = json.dumps(example_value(s.output.schema, rng))
        else:
            text = compose_answer(req, rng)
            seen = req.messages[-1].images if req.messages else ()
            if seen:
                looks = ", ".join(f"a {i.width}x{i.height} {str(i.media_type).split('/')[-1].upper()}" if i.url is None
                                  else "an image by URL" for i in seen)
                text = text.replace(") ", f") Looking at {looks}: ", 1)
        enc = tokens.encoding_for_model(req.model)
        ids = enc.encode(text or (f"{call.name}{call.arguments_json}" if call else ""))
        finish = "tool_calls" if call is not None else "stop"
        if s is not None and s.stop and s.output is None:
            cut = min((i for i in (text.find(x) for x in s.stop) if i >= 0), default=-1)
            if cut >= 0:
                text, ids = text[:cut], enc.encode(text[:cut])
        reasoning = _reasoning_tokens(s, req.max_tokens, rng)
        if len(ids) + reasoning > req.max_tokens:
            ids = ids[: max(req.max_tokens - reasoning, 0)]
            text = enc.decode(ids)
            finish = "length"
        msgs = [{"role": m.role, "content": m.content} for m in req.messages]
        usage = Usage(prompt_tokens=tokens.count_request(req.messages, req.model, system=req.system,
                                                         tools=s.tools if s is not None else None),
                      completion_tokens=len(ids) + reasoning, reasoning_tokens=reasoning)
        if s is not None and s.cache_prompt:
            self._use_cache(req, s.cache_prompt, msgs, usage)
        latency_s = self.latency.sample(rng, usage.prompt_tokens, usage.completion_tokens) / 1000.0
        resp = ProviderResponse(text, req.model, usage, finish, "sim-" + hashlib.sha1(key.encode()).hexdigest()[:16],
                                logprobs=_logprobs(enc, ids, s.logprobs, rng) if s is not None and s.logprobs is not None
                                else None, tool_calls=(call,) if call is not None else ())
        return resp, latency_s, failure

    def _use_cache(self, req: ProviderRequest, marks: tuple[int | str, ...], msgs: list[dict[str, str]],
                   usage: Usage) -> None:
        """Like Anthropic: the prompt up to the last breakpoint is read from the cache when this
        provider saw the same prefix before, else written to it."""
        ends = sorted({m % len(msgs) + 1 if isinstance(m, int) else 0 for m in marks})  # messages before each breakpoint
        sizes, keys = [], []
        for end in ends:
            prefix = msgs[:end]
            sizes.append(tokens.count_messages(prefix, req.model, system=req.system) if prefix
                         else tokens.count_text(req.system or "", req.model))
            keys.append(hashlib.sha256(repr((req.model, req.system, prefix)).encode()).hexdigest())
        with self._lock:
            read = max((n for n, k in zip(sizes, keys) if k in self._prompt_cache), default=0)
            self._prompt_cache.update(keys)
        usage.cached_tokens = min(read, usage.prompt_tokens)
        usage.cache_write_tokens = min(max(sizes) - read, usage.prompt_tokens - usage.cached_tokens)

    def _error(self, failure: _Failure, req: ProviderRequest) -> ProviderError:
        status, moves_on = FAILURE_KINDS[failure.kind]
        return ProviderError(
            f"{self.name}/{req.model}: injected {failure.kind.replace('_', ' ')}",
            provider=self.name,
            model=req.model,
            error_type=failure.kind,
            status_code=status,
            moves_on=moves_on,
        )

    def _budget(self, seconds: float) -> tuple[float, bool]:
        """How long to sleep, and whether the attempt's deadline cuts it short (a timeout)."""
        if seconds <= 0:
            return seconds, False
        io = current_attempt()
        if io is None:
            return seconds, False
        left = max(0.0, io.remaining())
        if seconds >= left:
            io.timed_out = True
            return left, True
        return seconds, False

    def _timeout(self, req: ProviderRequest) -> ProviderError:
        return ProviderError(f"{self.name}/{req.model}: no answer within the attempt's timeout", provider=self.name,
                             model=req.model, error_type="timeout")

    def _events(self, req: ProviderRequest, stream: bool) -> Iterator[StreamItem | _Pause]:
        """The whole answer as a script, I/O-free: pauses, chunks (streams only), then the
        response; an injected failure is raised where it happens. Both drivers play it."""
        resp, latency_s, failure = self._plan(req)
        if failure and not (stream and failure.mid_stream):
            raise self._error(failure, req)
        if not stream:
            yield _Pause(latency_s)
            yield resp
            return
        chunks = self._chunks(resp)
        pause = latency_s / (len(chunks) + 1)
        for i, chunk in enumerate(chunks):
            yield _Pause(pause)
            if failure and i == len(chunks) // 2:
                raise self._error(failure, req)
            yield chunk
        yield resp

    def _play(self, req: ProviderRequest, stream: bool) -> Iterator[StreamItem]:
        for event in self._events(req, stream):
            if isinstance(event, _Pause):
                wait, cut = self._budget(event.seconds)
                if wait:
                    time.sleep(wait)
                if cut:
                    raise self._timeout(req)
            else:
                yield event

    async def _aplay(self, req: ProviderRequest, stream: bool) -> AsyncIterator[StreamItem]:
        for event in self._events(req, stream):
            if not isinstance(event, _Pause):
                yield event
                continue
            wait, cut = self._budget(event.seconds)
            if wait:
                await asyncio.sleep(wait)
            if cut:
                raise self._timeout(req)

    def complete(self, req: ProviderRequest) -> ProviderResponse:
        *_, resp = self._play(req, stream=False)
        return resp  # type: ignore[return-value]

    async def acomplete(self, req: ProviderRequest) -> ProviderResponse:
        items = [item async for item in self._aplay(req, stream=False)]
        return items[-1]  # type: ignore[return-value]

    def _chunks(self, resp: ProviderResponse) -> list[str]:
        if not resp.content:
            return []  # a turn that only calls tools streams no text
        return re.findall(r"\s*\S+", resp.content) or [resp.content]

    def stream(self, req: ProviderRequest) -> Iterator[StreamItem]:
        return self._play(req, stream=True)

    def astream(self, req: ProviderRequest) -> AsyncIterator[StreamItem]:
        return self._aplay(req, stream=True)


class _Pause:
    """A wait in the simulated answer's script."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


def _tool_call(req: ProviderRequest, s: Sampling, rng: random.Random, key: str) -> ToolCall | None:
    """The simulated model's tool call, deterministic: with ``tool_choice`` "auto" it calls the
    tool whose name or description shares most words with the question (none shares one: it
    answers), once per question; "required" always calls the best match, a tool's name that tool.
    Arguments come from the question: capitalised names and numbers in order, else schema-valid
    values."""
    choice = s.tool_choice or "auto"
    tools = s.tools or ()
    if choice == "none" or not tools or not req.messages:
        return None
    if req.messages[-1].role == "tool" and choice == "auto":
        return None  # the results are in: answer
    question = next((m.content for m in reversed(req.messages) if m.role == "user"), "")
    words = {w.lower() for w in re.findall(r"[A-Za-z]{3,}", question)} - _STOP
    def score(t: Any) -> int:
        return len(words & {w.lower() for w in re.findall(r"[A-Za-z]{3,}", f"{t.name.replace('_', ' ')} {t.description}")})
    if choice not in ("auto", "required"):
        tool = next(t for t in tools if t.name == choice)
    else:
        tool = max(tools, key=score)  # the first of the best
        if choice == "auto" and score(tool) == 0:
            return None
    schema = tool.parameters
    props = schema.get("properties") or {}
    names = [re.sub(r"'s$", "", n) for n in re.findall(r"\b[A-Z][A-Za-z]+(?:\s+[A-Z][A-Za-z]+)*", question)
             if n.split()[0].lower() not in _STOP and not n.lower().startswith("what")]
    numbers = re.findall(r"-?\d+(?:\.\d+)?", question)
    args: dict[str, Any] = {}
    for name in schema.get("required") or list(props):
        prop = props.get(name) or {}
        kind = prop.get("type")
        if "enum" in prop:
            hit = [v for v in prop["enum"] if str(v).lower() in question.lower()]
            args[name] = hit[0] if hit else prop["enum"][0]
        elif kind == "string" and names:
            args[name] = names.pop(0)
        elif kind in ("integer", "number") and numbers:
            n = numbers.pop(0)
            args[name] = int(float(n)) if kind == "integer" else float(n)
        else:
            args[name] = example_value(prop, rng, schema)
    call_id = "call_sim_" + hashlib.sha1(f"{key}{tool.name}".encode()).hexdigest()[:16]
    return ToolCall.of(call_id, tool.name, args)


def _tool_answer(req: ProviderRequest) -> str:
    """The simulated model's answer once its tools have answered: what they returned."""
    results = []
    for m in reversed(req.messages):
        if m.role != "tool":
            break
        results.append(f"{m.name or 'the tool'} {'failed: ' if m.is_error else 'says '}{m.content[:200]}")
    return f"(simulated {req.model}) " + "; ".join(reversed(results)) + "."


_EFFORT_TOKENS = {"minimal": 16, "low": 64, "medium": 256, "high": 1024}


def _reasoning_tokens(s: Sampling | None, max_tokens: int, rng: random.Random) -> int:
    """Thinking a simulated model "spends": by reasoning effort, or up to the thinking budget."""
    if s is None or (s.reasoning_effort is None and s.thinking_budget is None):
        return 0
    if s.reasoning_effort is not None:
        want = _EFFORT_TOKENS[s.reasoning_effort]
    else:
        budget = s.thinking_budget or 0
        want = rng.randint(budget // 4, budget)
    return min(want, max_tokens // 2)


def _logprobs(enc: Any, ids: list[int], top: int, rng: random.Random) -> list[dict[str, Any]]:
    """Seeded log-probabilities in OpenAI's shape: each answer token, and ``top`` alternatives."""
    out = []
    for j, i in enumerate(ids):
        lp = -rng.random() * 2
        alts = [{"token": enc.decode([ids[(j + 3 * k) % len(ids)]]), "logprob": lp - rng.random() * (k + 1)}
                for k in range(1, top)]
        best = [{"token": enc.decode([i]), "logprob": lp}] + alts if top else []
        out.append({"token": enc.decode([i]), "logprob": lp, "top_logprobs": best})
    return out


# --- composing a plausible stand-in answer ------------------------------------------------
_STOP = set(
    """a an the and or but if then else of to in on at for from by with about as is are was were be been
    being it its this that these those what which who whom whose why how when where do does did can
    could should would will shall may might must i you he she we they me my your our their them us
    please tell give explain describe write list name show make into than so not no yes any some
    there here just very also more most less few many much each every one two three four five need
    sentence sentences word words line lines paragraph paragraphs brief briefly short detail detailed
    answer question using use used like""".split()
)
_OPENERS = [
    "Here is a short take on {a}.",
    "In brief, {a} comes down to a few points.",
    "Good question about {a}.",
    "A compact answer on {a}:",
]
_BODY = [
    "The central idea is how {a} relates to {b}.",
    "In practice, {a} matters most when {b} is involved.",
    "A common pitfall is to treat {a} and {b} as the same thing.",
    "It helps to start from {b} and work back to {a}.",
    "Most sources describe {a} in terms of {b}.",
    "The trade-off usually sits between {a} and {b}.",
]
_CLOSERS = [
    "A real model would add detail and sources here.",
    "Connect an API key for a real answer.",
    "Treat this as placeholder text for layout and cost tests.",
]


def _keywords(text: str, n: int = 4) -> list[str]:
    words = re.findall(r"[A-Za-z][A-Za-z0-9\-']{2,}", text)
    seen: dict[str, tuple[int, str]] = {}  # lower-cased -> (first position, original spelling)
    for i, w in enumerate(words):
        lw = w.lower()
        if lw not in _STOP and lw not in seen:
            # keep proper nouns ("France", "DuckDB"); lower-case a capitalised first word
            seen[lw] = (i, lw if i == 0 and w.istitle() else w)
    # longer words tend to carry the topic; the longest leads
    ranked = sorted(seen, key=lambda w: (-len(w), seen[w][0]))[:n]
    return [seen[w][1] for w in ranked] or ["the question"]


def compose_answer(req: ProviderRequest, rng: random.Random) -> str:
    """Build a deterministic, visibly simulated reply shaped by the prompt's intent."""
    prompt = req.messages[-1].content if req.messages else ""
    kws = _keywords(prompt)
    a = kws[0]
    b = kws[1] if len(kws) > 1 else "its context"
    low = prompt.lower()
    tag = f"(simulated {req.model}) "
    count = re.search(r"\b(\d{1,2})\b", low)
    if re.search(r"\b(list|name|give me|enumerate|ideas)\b", low) and count:
        n = max(1, min(int(count.group(1)), 10))
        notes = ["a first step", "a key factor", "worth checking", "often overlooked", "the usual default"]
        items = [f"{i + 1}. {kws[i % len(kws)][:1].upper() + kws[i % len(kws)][1:]} — {rng.choice(notes)}" for i in range(n)]
        return tag + f"{n} items on {a}:\n" + "\n".join(items)
    if re.search(r"\bsummari[sz]e|\btl;?dr\b|\bsummary\b", low):
        sentence = re.split(r"(?<=[.!?])\s", prompt.split(":", 1)[-1].strip())[0][:200]
        return tag + f"Summary: {sentence.rstrip('.')}. The rest elaborates on {a} and {b}."
    if re.search(r"\b(python|function|code|snippet|script)\b", low):
        fn = re.sub(r"[^a-z0-9_]", "_", a.lower())
        return tag + f"A sketch for {a}:\n```python\ndef {fn}(data):\n    # handle {b} here\n    return data\n```"
    if re.match(r"\s*(is|are|can|does|do|should|will|could|would)\b", low):
        verdict = rng.choice(["Probably yes", "Usually not", "It depends"])
        return tag + f"{verdict}: it hinges on {b}. " + rng.choice(_BODY).format(a=a, b=b)
    body = rng.sample(_BODY, 2)
    c = kws[2] if len(kws) > 2 else b
    return tag + " ".join(
        [rng.choice(_OPENERS).format(a=a), body[0].format(a=a, b=b), body[1].format(a=c, b=a), rng.choice(_CLOSERS)]
    )
