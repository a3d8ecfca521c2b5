"""What an experiment is: a dataset, prompt templates, models, a settings grid, repeats, scorers.

``Experiment`` validates everything it can on construction (missing template fields, unknown
scorers, an empty dataset, repeats <= 0) so a bad definition fails before any call is made.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidRequestError
from ..core.types import ROLES
from .scorers import Scorer, build_scorers

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Experiment", "Cell", "SETTING_KEYS"]

SETTING_KEYS = ("temperature", "max_tokens", "system", "stop", "top_p", "frequency_penalty", "presence_penalty",
                "logprobs", "reasoning_effort", "thinking_budget", "cache_prompt")


@dataclass(frozen=True)
class Cell:
    """One call of the grid: dataset row x template x model x settings x repeat."""

    index: int
    row: int
    template: str
    model: str  # the models entry: a model name or a role
    settings: str  # a readable id of the settings dict, e.g. "temperature=0.7"
    repeat: int
    prompt: str
    kwargs: Mapping[str, Any]  # role/model/system/max_tokens/temperature for kit.acomplete


def _template_fields(template: str) -> set[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidRequestError(
            f"prompt template {template!r:.60} is malformed: {exc} (write literal braces as {{{{ }}}})") from None
    return {f.split(".")[0].split("[")[0] for _, f, _, _ in parsed if f is not None}


def _settings_id(s: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={s[k]}" for k in SETTING_KEYS if k in s) or "default"


def load_dataset(dataset: Any, base: Path | None = None) -> pd.DataFrame:
    """A DataFrame from a DataFrame, a list of dicts, or a CSV / JSONL(.json) path."""
    import pandas as pd

    if isinstance(dataset, pd.DataFrame):
        return dataset.reset_index(drop=True)
    if isinstance(dataset, (str, Path)):
        path = Path(dataset)
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.exists():
            raise InvalidRequestError(f"dataset file {path} does not exist")
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            return pd.read_json(path, lines=path.suffix.lower() != ".json")
        raise InvalidRequestError(f"dataset {path}: use a .csv or .jsonl file (or a DataFrame)")
    if isinstance(dataset, Sequence) and all(isinstance(r, Mapping) for r in dataset):
        return pd.DataFrame(list(dataset))
    raise InvalidRequestError(f"dataset must be a DataFrame, a list of dicts or a CSV/JSONL path, got {type(dataset).__name__}")


def _settings_grid(settings: Any) -> list[dict[str, Any]]:
    if settings is None:
        return [{}]
    if isinstance(settings, Mapping):
        keys = list(settings)
        values = [v if isinstance(v, (list, tuple)) else [v] for v in settings.values()]
        grid = [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    elif isinstance(settings, Sequence) and not isinstance(settings, str):
        if not all(isinstance(s, Mapping) for s in settings):
            raise InvalidRequestError("settings as a list must hold dicts, e.g. [{'temperature': 0}, {'temperature': 1}]")
        grid = [dict(s) for s in settings]
    else:
        raise InvalidRequestError(f"settings must be a dict of lists (a grid) or a list of dicts, got {type(settings).__name__}")
    if not grid:
        raise InvalidRequestError("settings is empty: leave it out (None) for the defaults")
    for s in grid:
        bad = sorted(set(s) - set(SETTING_KEYS))
        if bad:
            raise InvalidRequestError(f"unknown setting(s) {bad}: use {', '.join(SETTING_KEYS)}")
    return grid


@dataclass
class Experiment:
    """A grid of calls to run with ``kit.run(exp)``.

    ``dataset``: DataFrame, list of dicts, or CSV/JSONL path; each row fills the templates'
    ``{fields}``. ``prompts``: one template, a list, or a dict name -> template. ``models``: model
    names or roles. ``settings``: dict of lists (a grid) or list of dicts over temperature,
    max_tokens, system. ``scorers``: names ("exact_match", "contains", "regex", "valid_json",
    "numeric", "embedding_similarity", "llm_judge", "rubric_judge"; see ``experiments.scorers``),
    ``{name: options}`` dicts, or callables ``f(output, row) -> float``.
    ``simulated``: canned offline answers for the run's simulated calls (see
    ``calls.providers.script.Script``: ``{pattern: answer}``, rules, or a function).
    """

    name: str
    dataset: Any
    prompts: Any
    models: Any
    settings: Any = None
    repeats: int = 1
    scorers: Any = None
    simulated: Any = None
    base_dir: Path | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidRequestError(f"experiment name must be a non-empty string, got {self.name!r}")
        from ..calls.providers.script import Script

        self.script = None if self.simulated is None else Script(self.simulated)
        self.data = load_dataset(self.dataset, self.base_dir)
        if self.data.empty:
            raise InvalidRequestError(f"experiment {self.name!r}: the dataset is empty (no rows to run)")
        self.templates = self._templates(self.prompts)
        columns = {str(c) for c in self.data.columns}
        for tname, tmpl in self.templates.items():
            missing = sorted(_template_fields(tmpl) - columns)
            if missing:
                raise InvalidRequestError(
                    f"prompt template {tname!r} uses field(s) {missing} missing from the dataset "
                    f"(columns: {', '.join(sorted(columns))})"
                )
        models = [self.models] if isinstance(self.models, str) else list(self.models or [])
        if not models or not all(isinstance(m, str) and m.strip() for m in models):
            raise InvalidRequestError(f"models must be a non-empty list of model names or roles, got {self.models!r}")
        self.model_list: list[str] = models
        self.grid = _settings_grid(self.settings)
        if not isinstance(self.repeats, int) or isinstance(self.repeats, bool) or self.repeats <= 0:
            raise InvalidRequestError(f"repeats must be a positive integer, got {self.repeats!r}")
        self.scorer_list: list[Scorer] = build_scorers(self.scorers, columns, self.data)

    @staticmethod
    def _templates(prompts: Any) -> dict[str, str]:
        if isinstance(prompts, str):
            out = {"prompt": prompts}
        elif isinstance(prompts, Mapping):
            out = {str(k): v for k, v in prompts.items()}
        elif isinstance(prompts, Sequence):
            out = {f"prompt{i + 1}" if len(prompts) > 1 else "prompt": p for i, p in enumerate(prompts)}
        else:
            raise InvalidRequestError(f"prompts must be a template string, a list or a dict, got {type(prompts).__name__}")
        if not out or not all(isinstance(t, str) and t.strip() for t in out.values()):
            raise InvalidRequestError("prompts must hold at least one non-empty template string")
        return out

    @classmethod
    def from_yaml(cls, path: str | Path) -> Experiment:
        """Load an experiment from YAML (dataset paths are relative to the file)."""
        import yaml

        path = Path(path)
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(spec, dict):
            raise InvalidRequestError(f"{path}: expected a mapping with name, dataset, prompts, models")
        spec.pop("run", None)  # run options (concurrency, budget_usd...) are read by the CLI
        unknown = sorted(set(spec) - {"name", "dataset", "prompts", "models", "settings", "repeats", "scorers",
                                      "simulated"})
        if unknown:
            raise InvalidRequestError(f"{path}: unknown key(s) {unknown}")
        return cls(**spec, base_dir=path.parent)

    # --- the grid ------------------------------------------------------------------------
    def cells(self) -> Iterator[Cell]:
        """Every call, in a stable order: row, template, model, settings, repeat."""
        records = self.data.to_dict("records")
        i = 0
        for r, row in enumerate(records):
            fields = {str(k): v for k, v in row.items()}
            for tname, tmpl in self.templates.items():
                prompt = tmpl.format(**fields)
                for m in self.model_list:
                    for s in self.grid:
                        kwargs: dict[str, Any] = {("role" if m in ROLES else "model"): m, **s}
                        for k in range(self.repeats):
                            # each repeat is its own seeded sample: distinct, and reproducible
                            # where the provider honours seeds (OpenAI, the simulated provider)
                            yield Cell(i, r, tname, m, _settings_id(s), k, prompt, {**kwargs, "seed": k})
                            i += 1

    @property
    def size(self) -> int:
        return len(self.data) * len(self.templates) * len(self.model_list) * len(self.grid) * self.repeats

    # --- identity ------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """The definition as JSON-able data (scorers by name and options)."""
        return {
            "name": self.name,
            "prompts": self.templates,
            "models": self.model_list,
            "settings": self.grid,
            "repeats": self.repeats,
            "scorers": [s.describe() for s in self.scorer_list],
            **({"simulated": self.script.digest} if self.script is not None else {}),
        }

    @property
    def dataset_hash(self) -> str:
        text = self.data.to_json(orient="records", date_format="iso", default_handler=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def hash(self) -> str:
        """Changes when anything that defines the calls or scores changes (dataset included)."""
        blob = json.dumps({"spec": self.spec(), "dataset": self.dataset_hash}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()
