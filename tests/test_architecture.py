"""The house rules a newcomer relies on, checked on the source: layers (import-linter), no private
imports across modules, every raise a KitError, small modules, a typed public API."""

from __future__ import annotations

import ast
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cognitionos_kit
from cognitionos_kit import Experiment, Kit
from cognitionos_kit.core.errors import KitError

PACKAGE = Path(cognitionos_kit.__file__).parent
ROOT = PACKAGE.parent
MODULES = sorted(PACKAGE.rglob("*.py"))
BIN = Path(sys.executable).parent

# Raises of non-kit exceptions that never reach a user, each with its reason.
INTERNAL_RAISES = {
    ("__init__.py", "AttributeError"): "module __getattr__ must raise AttributeError",
    ("__main__.py", "SystemExit"): "the CLI's exit status",
    ("client/memory.py", "AttributeError"): "__getattr__ must raise AttributeError for names Memory does not have",
    ("calls/fallback.py", "TimeoutError"): "the async backstop; as_provider_error turns it into a timeout ProviderError",
    ("storage/files.py", "NotADirectoryError"): "an OSError like os.mkdir's; callers raise StorageError",
    ("storage/journal.py", "TypeError"): "json's default= protocol; encode_rows raises InvalidRequestError",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = _module_name(path).split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def test_no_module_imports_a_private_name_from_another():
    offences = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and _resolve(path, node).startswith("cognitionos_kit"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offences.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name}")
    assert not offences, "\n".join(offences)


def test_no_module_reaches_into_another_modules_private_names():
    offences = []
    for path in MODULES:
        tree = ast.parse(path.read_text())
        modules = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   and _resolve(path, n).startswith("cognitionos_kit") for a in n.names if a.name.islower()}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not offences, "\n".join(offences)


def test_every_raise_is_a_kit_error_or_a_documented_internal_one():
    builtin = {name for name in dir(__builtins__ if isinstance(__builtins__, dict) else __builtins__)}
    builtin |= set(dir(__import__("builtins")))
    offences = []
    for path in MODULES:
        rel = str(path.relative_to(PACKAGE))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = target.id if isinstance(target, ast.Name) else None
            if name in builtin and (rel, name) not in INTERNAL_RAISES:
                offences.append(f"{rel}:{node.lineno} raises {name}: raise a KitError subclass")
    assert not offences, "\n".join(offences)
    for error in ("InvalidRequestError", "ConfigurationError", "ProviderError", "StorageError", "CostLimitError",
                  "AllProvidersFailedError", "StreamInterruptedError"):
        assert issubclass(getattr(cognitionos_kit, error), KitError)


def test_modules_stay_small_and_the_kit_class_short():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in MODULES}
    big = {k: v for k, v in sizes.items() if v > 500}
    assert not big, f"modules over 500 lines: {big}"
    source, first = inspect.getsourcelines(Kit)
    # 310 until the text log's three entry points (text_log, log, log_browser) joined the facade, 330
    # until Kit(project=, views=, cache=, cache_ttl=) and send's cache check did; the budget methods
    # live in guards.facade.GuardMethods, their wiring in calls.assembly.attach_guards
    assert len(source) <= 350, f"the Kit class has grown to {len(source)} lines: move logic into calls/ or storage/"


PUBLIC = [Kit.complete, Kit.acomplete, Kit.stream, Kit.astream, Kit.plan, Kit.send, Kit.asend, Kit.embed,
          Kit.count_tokens, Kit.set_price, Kit.set_role_model, Kit.playground, Kit.dashboard, Kit.run, Kit.usage,
          Kit.spend, Kit.summary, Kit.models, Kit.status, Kit.chat, Kit.log, Kit.log_browser, Kit.__init__, Kit.from_config,
          Experiment.__init__]


@pytest.mark.parametrize("fn", PUBLIC, ids=lambda f: f.__qualname__)
def test_public_methods_show_typed_keyword_signatures(fn):
    """What shift-Tab shows: every parameter named, typed and (after the first) keyword-only or
    defaulted; no bare **kwargs on the call methods."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    assert sig.return_annotation is not inspect.Signature.empty, f"{fn.__qualname__} has no return type"
    for p in params:
        assert p.annotation is not inspect.Parameter.empty, f"{fn.__qualname__}({p.name}) has no type"
    owner = {"Kit": Kit, "Experiment": Experiment}[fn.__qualname__.split(".")[0]]
    doc = owner.__doc__ if fn.__name__ == "__init__" else fn.__doc__  # shift-Tab on a class shows its docstring
    assert doc and doc.strip(), f"{fn.__qualname__} has no docstring"
    if fn.__name__ in ("complete", "acomplete", "stream", "astream", "plan"):
        names = [p.name for p in params]
        assert names[0] == "prompt" and {"role", "model", "max_tokens", "user_id", "deadline", "fallback_on"} <= set(names)
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
        assert "role:" in fn.__doc__ and "deadline:" in fn.__doc__  # the options are documented where shown


def test_call_methods_share_one_signature():
    signatures = {name: inspect.signature(getattr(Kit, name)) for name in ("complete", "acomplete", "stream", "astream")}
    assert len({str(s.replace(return_annotation=inspect.Signature.empty)) for s in signatures.values()}) == 1


def test_py_typed_is_shipped():
    assert (PACKAGE / "py.typed").exists()


def test_lint_imports_fails_when_a_lower_layer_imports_a_higher_one(tmp_path):
    """The layer contract can fail: the same check on a copy where calls/ imports the Kit facade."""
    if shutil.which("lint-imports", path=str(BIN)) is None:
        pytest.fail("lint-imports is not installed: pip install -e .[dev]")
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "cognitionos_kit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    ok = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=copy, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    router = copy / "cognitionos_kit" / "calls" / "router.py"
    router.write_text(router.read_text() + "\nfrom ..kit import Kit  # noqa: E402,F401\n")
    broken = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=copy, env=env, capture_output=True, text=True)
    assert broken.returncode != 0
    assert "cognitionos_kit.calls.router -> cognitionos_kit.kit" in broken.stdout
