"""The patterns of ``format = "regex"``: checked when the configuration is, bounded when matched.

A device line is untrusted input and a backtracking matcher can take exponential time
on a pattern like ``(a+)+b`` and a line of many ``a``. Two bounds:

- ``compile_pattern`` refuses, at check-config, a repeated part that holds another
  quantifier or alternatives (``(\\d+,?)*``, ``(a|ab)*``), the shape behind exponential
  backtracking; an atomic group ``(?>…)`` or a possessive quantifier ``++`` is accepted
  there, since it never backtracks into what it matched.
- every match runs with a time limit (the ``regex`` package's ``timeout``), which
  bounds what slips through, such as the polynomial ``\\d+\\d+\\d+x`` on a long line of
  digits: such a line becomes a dead letter and the next line is read as usual. Lines
  are at most ``max_line_bytes`` long in any case.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from typing import Any

import regex

# Long enough for any honest line (a match takes microseconds), short enough that a
# hostile one costs the event loop no more than a slow disk write would. The regex
# package counts the process's processor time (C's clock()), so a busy or CPU-capped
# machine that leaves the gateway waiting does not cut off an honest line.
MATCH_TIMEOUT = 0.02

REASON_NO_MATCH = "no match for pattern"
REASON_TIMEOUT = f"pattern took longer than {MATCH_TIMEOUT * 1000:g} ms"

# Python's own parser of regular expressions: the one place their structure is exposed.
_parser: Any = importlib.import_module("re._parser")
_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT"})
# Never backtrack into what they matched, so nothing inside them multiplies.
_NO_BACKTRACK = frozenset({"POSSESSIVE_REPEAT", "ATOMIC_GROUP"})

NESTED_RULE = (
    "repeats a part that holds a quantifier or alternatives ({example}): a hostile line could "
    "make matching take exponential time; make the inner part atomic (?>…) or "
    "possessive (++, *+) or write it without nesting"
)


def compile_pattern(text: str) -> regex.Pattern[str]:
    """The compiled pattern; ``ValueError`` saying what is wrong with it."""
    try:
        parsed = _parser.parse(text)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression: {exc}") from None
    hazard = _hazard(parsed, in_repeat=False)
    if hazard is not None:
        raise ValueError(NESTED_RULE.format(example=hazard))
    try:
        compiled = regex.compile(text)
    except regex.error as exc:
        raise ValueError(f"is not a valid regular expression: {exc}") from None
    if not compiled.groupindex:
        raise ValueError(
            "needs at least one named group, like (?P<t>[-0-9.]+): each names a sensor"
        )
    return compiled


def _hazard(pattern: Any, *, in_repeat: bool) -> str | None:
    """How ``pattern`` nests repetition, as an example to show, or None if it does not."""
    for op, av in pattern:
        name = str(op)
        if name in _NO_BACKTRACK:
            continue
        if name in _REPEATS:
            _low, high, body = av
            if high > 1:
                if in_repeat:
                    return "(a+)+ and the like"
                found = _hazard(body, in_repeat=True)
            else:
                found = _hazard(body, in_repeat=in_repeat)
        elif name == "BRANCH" and in_repeat:
            return "(a|ab)* and the like"
        else:
            found = next(
                (h for sub in _subpatterns(av) if (h := _hazard(sub, in_repeat=in_repeat))),
                None,
            )
        if found is not None:
            return found
    return None


def _subpatterns(av: object) -> Iterable[Any]:
    """The parsed groups inside an operation's arguments (groups, branches, lookarounds)."""
    if isinstance(av, tuple | list):
        for item in av:
            yield from _subpatterns(item)
    elif hasattr(av, "data"):
        yield av
