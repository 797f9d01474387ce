"""constraints.txt, the exact versions a release installs, against pyproject's dependencies.

The file is written by ``make constraints`` (tools/freeze-constraints) from a fresh
install and used by the Ansible role's pip install; tests/test_ansible_role.py checks
that a release installed by the role has exactly these versions. Here: every dependency
of the package and of its ``gpio`` extra is pinned, to a version its specifier allows,
with the dependencies of those dependencies (as this environment's installed metadata
declares them), and nothing else.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / "constraints.txt"
EXTRAS = ("gpio",)


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+", line), line
        name, _, version = line.partition("==")
        assert _name(name) not in pins, f"pinned twice: {name}"
        pins[_name(name)] = version
    return pins


def _direct() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [
        r for extra in EXTRAS for r in project["optional-dependencies"][extra]
    ]
    return [Requirement(r) for r in listed if _applies(Requirement(r), "")]


def _applies(requirement: Requirement, extra: str) -> bool:
    return requirement.marker is None or requirement.marker.evaluate({"extra": extra})


def _requires(name: str) -> list[Requirement]:
    """What the installed distribution ``name`` needs here (no extras of its own)."""
    requires = metadata.distribution(name).requires or []
    return [r for r in map(Requirement, requires) if _applies(r, "")]


def test_every_dependency_is_pinned_to_a_version_pyproject_allows() -> None:
    pins = _pins()
    for requirement in _direct():
        name = _name(requirement.name)
        assert name in pins, f"{requirement.name} is not in constraints.txt: make constraints"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{requirement} does not allow the pinned {pins[name]}: make constraints"
        )


def test_the_pins_are_the_closure_of_the_dependencies_and_nothing_more() -> None:
    pins = _pins()
    reachable: set[str] = set()
    todo = [_name(r.name) for r in _direct()]
    while todo:
        name = todo.pop()
        if name in reachable:
            continue
        reachable.add(name)
        for requirement in _requires(name):
            assert _name(requirement.name) in pins, (
                f"{name} needs {requirement.name}, which constraints.txt lacks: make constraints"
            )
            todo.append(_name(requirement.name))
    assert set(pins) == reachable, f"pinned but not needed: {set(pins) - reachable}"
