"""Files stay legible: none over 400 lines, no function over 80 (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("distill", "teachers", "students", "benchmarks", "tests")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80


def _python_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def test_no_file_over_400_lines_and_no_function_over_80():
    files = _python_files()
    assert len(files) > 100  # the scan sees the project
    too_long = []
    for path in files:
        source = path.read_text()
        name = path.relative_to(ROOT)
        if len(source.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}(): {lines} lines")
    assert too_long == []
