"""A release is told apart by its version: one source, a changelog entry for each."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from gateway import __version__

ROOT = Path(__file__).resolve().parent.parent


def pyproject_version() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    version = tomllib.loads(text)["project"]["version"]
    assert isinstance(version, str)
    return version


def test_the_running_code_reports_the_version_pyproject_declares() -> None:
    # A mismatch means the environment predates a version bump: reinstall it
    # (`make venv` does when pyproject.toml changed).
    assert __version__ == pyproject_version()


def test_the_changelog_has_an_unreleased_section_and_one_for_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d\d-\d\d))?$", changelog, re.M)
    names = [name for name, _ in headings]
    assert names[0] == "Unreleased"
    assert pyproject_version() in names
    # Every release has a date; releases are listed newest first.
    released = headings[1:]
    assert all(date for _, date in released)
    assert [date for _, date in released] == sorted((d for _, d in released), reverse=True)
