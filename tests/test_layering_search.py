"""Layering of ``distill``: it never imports the student or teacher packages, and the recipe
schema (``distill.config``, ``distill.search_config``) imports none of the search, the models or
the training. A plain AST scan of ``distill/**/*.py`` (imports inside functions count too), so it
needs no tool; import-linter contracts are to replace it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ("distill.config", "distill.search_config")
NOT_IN_SCHEMA = ("distill.search", "distill.models", "distill.lightning", "distill.training")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "distill").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _nodes(tree: ast.AST, eager: bool):
    """The nodes of ``tree``; ``eager``: only those that run on import (not function bodies)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not (eager and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))):
                todo.append(child)


def _imports(name: str, path: Path, modules: dict[str, Path], eager: bool) -> set[str]:
    """The modules ``name`` imports (absolute names; ``from pkg import sub`` names the submodule
    when there is one); ``eager``: only the imports that run when ``name`` is imported."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _nodes(ast.parse(path.read_text(), str(path)), eager):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if f"{base}.{alias.name}" in modules)
    return found


def _graph(eager: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules, eager) for name, path in modules.items()}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_distill_imports_no_student_or_teacher_module():
    bad = sorted((module, target) for module, targets in _graph().items() for target in targets
                 for top in ("students", "teachers")
                 if _within(target, top))
    assert not bad, f"distill modules importing students / teachers: {bad}"


def test_recipe_schema_imports_no_search_models_or_training():
    every, eager = _graph(), _graph(eager=True)
    for start in SCHEMA:
        # its own imports (lazy ones too), then what importing those runs (their module-level
        # imports, and a submodule's packages' __init__), through every distill module
        seen, todo = set(), [m for m in every[start] if m in every]
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            parents = {module.rsplit(".", n)[0] for n in range(1, module.count(".") + 1)}
            todo += [m for m in eager[module] | parents if m in eager]
        bad = sorted(m for m in seen for prefix in NOT_IN_SCHEMA if _within(m, prefix))
        assert not bad, f"{start} imports (directly or not) {bad}"


def test_the_scan_sees_imports():
    """The scan itself: the search imports the schema, the cli imports the search lazily."""
    graph = _graph()
    assert "distill.search_config" in graph["distill.search.space"]
    assert "distill.search.zero_shot" in graph["distill.cli"]
    assert "distill.config" in graph["distill.search.checks"]
