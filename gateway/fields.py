"""Settings tables declared once, as typed dataclasses, then checked and documented from there.

A settings class declares each key as a dataclass field whose metadata, made with
``key()``, holds the converter of its TOML value, its kind and its meaning. From that
one declaration:

- ``check_table`` validates a TOML table: every problem is collected, one per bad key,
  named by its path (``devices[2].registers[4].type``), unknown keys with a suggestion;
  a field whose key declares ``table`` is an array of tables checked the same way, one
  level down;
- the defaults are the fields' defaults;
- ``gateway.config_docs`` writes the documentation's tables.

The converters here take the raw TOML value and return the settings value or raise
``Invalid``; their messages are what users read after the key's path.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from gateway.errors import ConfigProblem
from gateway.reading import SENSOR_NAME_RULE, SensorNames

# Ids become an MQTT topic level and a URL path segment: no "/", "+", "#",
# whitespace, "%" or "$" (topics starting with "$" are reserved by brokers).
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ID_RULE = 'must be 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit'

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
SIZE_RULE = 'must be a size: bytes as an integer, or a string like "64kB", "512MiB", "1GB"'

_DURATION_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)\s*")
DURATION_RULE = (
    'must be a duration: seconds as a number, or a string like "500ms", "30s", "5m", "2h", "7d"'
)


class Invalid(Exception):
    """A value is wrong; the message says how, the caller knows where."""


class _AlreadyReported(Invalid):
    """A nested table's problems are already in the list."""


# Every converter takes the raw TOML value and returns the settings value or
# raises Invalid.
Convert = Callable[[object], Any]


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as ``"512MiB"``; ``ValueError`` if neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None or match[2].lower() not in _SIZE_UNITS:
        raise ValueError(SIZE_RULE)
    size = Decimal(match[1]) * _SIZE_UNITS[match[2].lower()]
    if size != size.to_integral_value():
        raise ValueError("must be a whole number of bytes")
    return int(size)


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"5m"``; ``ValueError`` if neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(DURATION_RULE)
    return float(Decimal(match[1]) * _DURATION_UNITS[match[2]])


def format_duration(seconds: float) -> str:
    """The shortest way to write ``seconds`` in a configuration file: ``"18ms"``, ``"1m"``."""
    if seconds == 0:
        return "0"
    exact = Decimal(repr(seconds))
    for unit, size in sorted(_DURATION_UNITS.items(), key=lambda item: -item[1]):
        count = exact / size
        if count == count.to_integral_value():
            return f'"{int(count)}{unit}"'
    return repr(seconds)


def kind_of(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    kinds |= {list: "an array", dict: "a table"}
    return kinds.get(type(value), type(value).__name__)


def toml_value(value: object) -> str:
    """``value`` as TOML would spell it: for messages, and for writing configurations.

    A string becomes a basic string (JSON's escapes are all valid TOML escapes; TOML
    also forbids a raw DEL), so any path or token can be written safely.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value).replace("\x7f", "\\u007f")
    return str(value)


def one_of(values: Iterable[object]) -> str:
    return ", ".join(toml_value(v) for v in values)


def did_you_mean(word: str, candidates: Iterable[object]) -> str:
    names = [c for c in candidates if isinstance(c, str)]
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if not close:
        lowered = {n.lower(): n for n in names}
        close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
        close = [lowered[c] for c in close]
    return f' (did you mean "{close[0]}"?)' if close else ""


# Converters -------------------------------------------------------------------


def string(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, not {kind_of(value)}")
    return value


def text(value: object) -> str:
    result = string(value)
    if not result.strip():
        raise Invalid("must not be empty")
    return result


def finite_number(value: object) -> int | float:
    """An integer or a float as given (an integer stays exact), never NaN or infinite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"must be a number, not {kind_of(value)}")
    if not math.isfinite(value):
        raise Invalid("must be a finite number")
    return value


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, not {kind_of(value)}")
    return value


def size(minimum: int) -> Convert:
    def convert(value: object) -> int:
        try:
            result = parse_size(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if result < minimum:
            raise Invalid(f"must be at least {minimum} bytes (got {result})")
        return result

    return convert


def duration(*, positive: bool) -> Convert:
    def convert(value: object) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if positive and seconds <= 0:
            raise Invalid("must be longer than 0 seconds")
        return seconds

    return convert


def bounded_duration(low: float, high: float) -> Convert:
    as_duration = duration(positive=False)

    def convert(value: object) -> float:
        seconds: float = as_duration(value)
        if not low <= seconds <= high:
            raise Invalid(f"must be from {low:g} to {high:g} seconds")
        return seconds

    return convert


def choice(values: Iterable[object]) -> Convert:
    allowed = tuple(values)
    kinds = {type(v) for v in allowed}

    def convert(value: object) -> Any:
        # Compare types too: true must not pass as 1, nor 9600.0 as 9600.
        if value not in allowed or type(value) not in kinds:
            hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
            raise Invalid(f"must be one of {one_of(allowed)} (got {toml_value(value)}){hint}")
        return value

    return convert


def identifier(value: object) -> str:
    result = string(value)
    if not ID_PATTERN.fullmatch(result):
        raise Invalid(f"{ID_RULE} (got {toml_value(result)})")
    return result


def strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid(f"must be an array of strings, not {kind_of(value)}")
    items = tuple(value)
    if not all(isinstance(v, str) and v.strip() for v in items):
        raise Invalid("must be an array of non-empty strings")
    duplicates = sorted({v for v in items if items.count(v) > 1})
    if duplicates:
        raise Invalid(f"names {one_of(duplicates)} more than once")
    return items


def sensor_name(value: object) -> str:
    # Checked here too, so a configured name is refused now rather than each reading
    # becoming a dead letter at run time.
    name = text(value)
    if SensorNames(limit=1).refusal(name) is not None:
        raise Invalid(f"must be {SENSOR_NAME_RULE} (got {toml_value(name)})")
    return name


def sensor_names(value: object) -> tuple[str, ...]:
    names = strings(value)
    for name in names:
        sensor_name(name)
    return names


def string_table(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise Invalid(f"must be a table, not {kind_of(value)}")
    bad = [k for k, v in value.items() if not isinstance(v, str)]
    if bad:
        raise Invalid(f"values must be strings ({one_of(bad)} is not)")
    return dict(value)


# Declaring keys -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    """How one key is read and documented."""

    convert: Convert
    # The "type" column of the documentation: "duration", "integer", "array of tables", …
    kind: str
    # The "meaning" column: Markdown on one line.
    doc: str
    # An array of tables ([[devices.registers]]): the class each table is checked against.
    table: type | None = None


def key(convert: Convert, kind: str, doc: str) -> dict[str, Key]:
    """The metadata of a settings field: ``x: int = field(default=1, metadata=key(…))``."""
    return {"key": Key(convert, kind, doc)}


def tables(cls: type, doc: str) -> dict[str, Key]:
    """The metadata of a field holding an array of tables, each checked against ``cls``."""
    return {"key": Key(_no_convert, "array of tables", doc, table=cls)}


def _no_convert(value: object) -> object:
    return value


def keys_of(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Key]]:
    """Every key a settings class declares, in declaration order."""
    return {
        f.name: (f, f.metadata["key"])
        for f in dataclasses.fields(cls)
        if isinstance(f.metadata.get("key"), Key)
    }


def is_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


@dataclass(frozen=True, slots=True)
class Given:
    """Which keys a table gave, and which of them were refused: cross-key rules that
    involve a refused key stay silent, so one mistake is reported once."""

    given: frozenset[str]
    bad: frozenset[str]

    def ok(self, *keys: str) -> bool:
        return not self.bad.intersection(keys)


# What a settings class may add: the problems across its keys, as (key, message).
CrossCheck = Callable[[Any, Given], Iterable[tuple[str, str]]]

T = TypeVar("T")


@dataclass(slots=True)
class Checked:
    """The outcome of ``check_table``: the settings, when they could be built."""

    settings: Any
    values: dict[str, Any]
    given: Given


def check_table(
    cls: type[T],
    data: Mapping[str, object],
    path: str,
    problems: list[ConfigProblem],
    *,
    foreign: Mapping[str, str] | None = None,
    required: Callable[[str], str] = lambda _name: "required",
) -> Checked:
    """Validate ``data`` against ``cls``; append a problem per bad key to ``problems``.

    ``foreign`` names, for keys ``cls`` does not declare but a sibling class does, why
    they are refused (``not used by driver "gpio_input"``); other unknown keys get a
    suggestion. ``required`` words the problem of a missing key. The settings are built
    (bad keys taking their defaults) unless a required key is missing or bad; then the
    class's ``cross_check(given)``, if it has one, adds the problems across keys.
    """
    declared = keys_of(cls)
    values: dict[str, Any] = {}
    bad: set[str] = set()
    refused: list[tuple[str, str]] = []

    def problem(name: str, message: str) -> None:
        problems.append(ConfigProblem(f"{path}.{name}", message))

    for name, value in data.items():
        if name not in declared:
            if foreign is not None and name in foreign:
                refused.append((name, foreign[name]))
            else:
                problem(name, "unknown key" + did_you_mean(name, declared))
            continue
        spec = declared[name][1]
        try:
            if spec.table is not None:
                values[name] = _check_tables(spec.table, value, f"{path}.{name}", problems)
            else:
                values[name] = spec.convert(value)
        except _AlreadyReported:
            bad.add(name)
        except Invalid as exc:
            problem(name, str(exc))
            bad.add(name)
    # Keys of another class are refused once, and no rule about their value speaks again.
    for name, message in sorted(refused):
        problem(name, message)
    missing = False
    for name, (f, _) in declared.items():
        if is_required(f) and name not in data:
            problem(name, required(name))
            missing = True
    given = Given(frozenset(data), frozenset(bad))
    if missing or any(is_required(declared[name][0]) for name in bad):
        return Checked(None, values, given)
    settings = cls(**values)
    cross_check: CrossCheck | None = getattr(cls, "cross_check", None)
    if cross_check is not None:
        for name, message in cross_check(settings, given):
            problem(name, message)
    return Checked(settings, values, given)


def _check_tables(
    cls: type, value: object, path: str, problems: list[ConfigProblem]
) -> tuple[Any, ...]:
    """An array of tables, each checked against ``cls`` with its index in the path."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        name = path.rsplit(".", 1)[-1]
        raise Invalid(f"must be an array of tables ([[….{name}]] sections)")
    before = len(problems)
    items = [check_table(cls, item, f"{path}[{i}]", problems) for i, item in enumerate(value)]
    if len(problems) > before:
        # Each bad table named its own keys; the array as a whole is not named again.
        raise _AlreadyReported
    return tuple(item.settings for item in items)


def table_rows(cls: type, names: Iterable[str]) -> Iterator[tuple[str, Key, str]]:
    """``(name, key, default as shown)`` for the documentation's table of ``cls``."""
    declared = keys_of(cls)
    for name in names:
        f, spec = declared[name]
        yield name, spec, _shown_default(f, spec)


def _shown_default(f: dataclasses.Field[Any], spec: Key) -> str:
    if is_required(f):
        return "required"
    default: Any = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    if default is None or default == "":
        return "unset"
    if spec.kind == "duration":
        return f"`{format_duration(default)}`"
    if isinstance(default, tuple | list):
        return f"`[{one_of(default)}]`"
    if default == {}:
        return "`{}`"
    if isinstance(default, float) and default == int(default):
        return f"`{int(default)}`"
    return f"`{toml_value(default)}`"
