"""Device globs as clients and configurations give them: checked, then matched in C.

A glob picks devices by id with fnmatch's syntax (``*``, ``?``, ``[...]``, ``[!...]``).
Ids are made of letters, digits, ``.``, ``_`` and ``-``, so a glob needs no other
characters; limiting it to these keeps every glob expressible as SQLite's ``GLOB``
(run in C over the log) and as one small compiled pattern per client.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable

MAX_GLOB_LENGTH = 128
_GLOB = re.compile(r"(?:[A-Za-z0-9._*?-]|\[!?[A-Za-z0-9._-]+\])*")
# Bracket sets may also hold ranges ("[1-3]"): "-" is among the allowed characters.
GLOB_RULE = (
    f"must be at most {MAX_GLOB_LENGTH} characters: letters, digits, '.', '_', '-', "
    "'*', '?' and closed sets like '[12]' or '[!a-c]'"
)


def check_device_glob(glob: str) -> str:
    """``glob`` if it follows ``GLOB_RULE``, else ``ValueError``."""
    if len(glob) > MAX_GLOB_LENGTH or not _GLOB.fullmatch(glob):
        raise ValueError(GLOB_RULE)
    return glob


def sqlite_glob(glob: str) -> str | None:
    """``glob`` in SQLite's GLOB syntax, or None when it cannot be expressed there.

    Without brackets the two agree; a set's negation is ``[!`` for fnmatch and ``[^``
    for SQLite. Unclosed brackets (literal for fnmatch) have no GLOB equivalent.
    """
    if "[" not in glob and "]" not in glob:
        return glob
    if not _GLOB.fullmatch(glob):
        return None
    return glob.replace("[!", "[^")


def glob_matcher(glob: str) -> Callable[[str], bool]:
    """A case-sensitive matcher for ``glob``, compiled once for its owner.

    Not ``fnmatch.fnmatchcase``: that keeps every pattern it ever saw in a global
    cache, which clients choosing new globs would grow.
    """
    match = re.compile(fnmatch.translate(glob)).match
    return lambda name: match(name) is not None
