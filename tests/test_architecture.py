"""The structure docs/architecture.md describes, checked from the source with ``ast``.

* No import cycle among mlc's modules: module-level and function-level imports both count
  (an import inside a function to dodge a cycle is still a cycle in the design).
* No module uses another module's underscore-prefixed name: not by import (``from m import
  _x``), not by attribute (``model._exe``). A private *module* (``_errors``, ``_kernels``) is
  private to the package that holds it: modules inside that package may import it.
* The public API is ``mlc.__all__``, and ``import mlc`` loads no training, plotting or
  conversion stack (tests/test_lazy_imports.py).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mlc"

# Underscore-prefixed names used outside the module that defines them, each with its reason.
# Third-party privates mlc has no public way around; no mlc module's private name is here.
ALLOWED_PRIVATE_ATTRIBUTES = {
    ("mlc.runtime.hoist", "_cache_size"): "jax.jit's count of compiled signatures; JAX has no public accessor",
    ("mlc.runtime.compilation_cache", "_ATIME_SUFFIX"): "JAX's LRU cache file suffix, to rename its entries into place atomically",
    ("mlc.runtime.compilation_cache", "_CACHE_SUFFIX"): "JAX's LRU cache file suffix, to rename its entries into place atomically",
    ("mlc.createml.data", "_getframe"): "sys._getframe: the caller's file, to tell a user's relative path from mlc's own",
    ("mlc.testing.coremltools_plugin", "_mlc_model"): "the MLModel attribute the coremltools drop-in (mlc.deploy.coremltools_backend) sets; tests only",
    ("mlc.testing.coremltools_plugin", "_macos_version"): "coremltools' own test helper, patched so its suites run off macOS; tests only",
    ("mlc.testing.torch_models", "_BatchNorm"): "torch's batch-norm base class, to find every batch norm of a test model; tests only",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str, tree: ast.AST):
    """``(target module, imported name or None)`` for every import in ``module``, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(module).split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                yield (full, None) if full in MODULES else (source, alias.name)


def _owner(target: str) -> str | None:
    """The mlc module ``target`` names, or the module holding it."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        deps = set()
        for target, _ in _imports(module, ast.parse(path.read_text())):
            owner = _owner(target) if target.startswith("mlc") else None
            if owner and owner != module:
                deps.add(owner)
        graph[module] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), iteratively."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_mlc_modules():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (module- and function-level imports count):\n" + "\n".join(map(str, cycles))


def _defined_private_names(tree: ast.AST) -> set[str]:
    """Underscore-prefixed names a module defines: functions, classes, assignments (attributes
    of ``self`` included) and parameters."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _private_uses(module: str, tree: ast.AST) -> list[str]:
    problems = []
    for target, name in _imports(module, tree):
        if not target.startswith("mlc"):
            continue
        owner = _owner(target)
        parts = target.split(".")
        for i, part in enumerate(parts):  # a private module: only its own package may import it
            if part.startswith("_") and not part.startswith("__"):
                package = ".".join(parts[:i])
                if not (module == package or module.startswith(package + ".")):
                    problems.append(f"{module} imports private module {'.'.join(parts[: i + 1])}")
        if name and name.startswith("_") and not name.startswith("__") and owner != module:
            problems.append(f"{module} imports {target}.{name}")
    own = _defined_private_names(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        if node.attr in own or (module, node.attr) in ALLOWED_PRIVATE_ATTRIBUTES:
            continue
        problems.append(f"{module}:{node.lineno} uses {ast.unparse(node)}")
    return problems


def test_no_module_uses_another_modules_private_names():
    problems = [p for module, path in sorted(MODULES.items()) for p in _private_uses(module, ast.parse(path.read_text()))]
    assert not problems, "underscore-prefixed names used outside their module:\n" + "\n".join(problems)


def test_the_private_name_check_catches_attribute_and_import_uses():
    tree = ast.parse("from mlc.model import _named_limit\nimport mlc\n\ndef f(model):\n    return model._exe\n")
    problems = _private_uses("mlc.deploy.aot", tree)
    assert any("_named_limit" in p for p in problems) and any("model._exe" in p for p in problems)


def test_every_allowed_private_use_still_exists():
    """The allow-list shrinks as its entries go: an entry nothing uses any more fails."""
    for (module, name), reason in ALLOWED_PRIVATE_ATTRIBUTES.items():
        assert reason
        assert module in MODULES, module
        source = MODULES[module].read_text()
        assert f".{name}" in source, f"{module} no longer uses {name}; remove it from the allow-list"


@pytest.mark.parametrize("folder", ["program", "runtime", "kernels", "frontends", "io", "deploy", "train", "createml", "serve"])
def test_each_folder_is_described_in_the_architecture_page(folder):
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert f"mlc/{folder}/" in page


def test_public_api_is_explicit():
    import mlc

    for name in mlc.__all__:
        assert getattr(mlc, name) is not None, name
    for name in ("Model", "State", "load", "Program", "Runner", "Feature", "FeatureDescriptions", "BatchPredictor", "cost_report", "CostReport", "CompileReport"):
        assert name in mlc.__all__, name
    assert mlc.Model.params.fset is None  # no unchecked setter: with_params checks, rounds and tracks
    assert os.path.isfile(ROOT / "docs" / "architecture.md")
