"""The test suite's layout: shared helpers live in tests/support/, where tests and
benchmarks both find them, and no test module imports another."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.imports import imported_modules

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])


def is_test_module(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "tests" and any(part.startswith("test_") for part in parts[1:])


def test_no_module_imports_a_test_module() -> None:
    assert len(SOURCES) > 50
    imports = {
        path.relative_to(ROOT).as_posix(): sorted(filter(is_test_module, imported_modules(path)))
        for path in SOURCES
    }
    # A helper two test modules need goes to tests/support/, in a module named for it.
    assert {path: found for path, found in imports.items() if found} == {}


def test_imports_are_absolute() -> None:
    # A relative import would hide a test module from the check above.
    relative = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in SOURCES
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if isinstance(node, ast.ImportFrom) and node.level
    ]
    assert relative == []


def test_the_check_sees_test_modules() -> None:
    # The control for the check: each way a test module can be named is caught.
    assert is_test_module("tests.test_store")
    assert is_test_module("tests.test_store.opened")
    assert is_test_module("tests.soak.test_campaign")
    assert not is_test_module("tests.support.store")
    assert not is_test_module("gateway.test_mode")
