"""The device keys of docs/configuration.md, written from the drivers' settings types.

``python -m gateway.config_docs docs/configuration.md`` rewrites the part of the file
between ``BEGIN`` and ``END`` from ``DeviceSettings`` and the settings class of every
installed driver (with their arrays of tables, such as a register map); a test fails
when the committed file differs from what this writes. Edit the settings types, not
that part of the file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from gateway.driver_registry import DriverSpec, drivers
from gateway.fields import keys_of, table_rows
from gateway.settings import DeviceSettings

BEGIN = (
    "<!-- Written by `python -m gateway.config_docs docs/configuration.md` from the drivers' "
    "settings types: edit those, not this part. -->"
)
END = "<!-- End of the part written from the settings types. -->"

INTRO = (
    "One `[[devices]]` section per device; each becomes `devices[0]`, `devices[1]`, … in "
    "messages. Every device has the keys in the first table; the driver it names adds its "
    "own, in the sections that follow. A key of another driver is an error "
    '(`devices[2].baudrate: not used by driver "gpio_input"`), so a section copied from '
    "another device never looks configured when it is not."
)


def _table(cls: type, names: Iterable[str]) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, key, shown in table_rows(cls, names):
        # A pipe ends a table cell even inside backticks unless escaped, as in (a\|b)*.
        doc = key.doc.replace("|", "\\|")
        rows.append(f"| `{name}` | {key.kind} | {shown} | {doc} |")
    return rows


def _driver(spec: DriverSpec) -> list[str]:
    common = keys_of(DeviceSettings)
    own = [name for name in keys_of(spec.settings) if name not in common]
    lines = [f"### Keys of `{spec.name}`", "", spec.summary, "", *_table(spec.settings, own), ""]
    for name in own:
        nested = keys_of(spec.settings)[name][1].table
        if nested is not None:
            lines += [f"#### `[[devices.{name}]]` of `{spec.name}`", ""]
            lines += [*_table(nested, keys_of(nested)), ""]
    if spec.guide:
        lines += [spec.guide.rstrip("\n"), ""]
    return lines


def devices_section(registry: Mapping[str, DriverSpec] | None = None) -> str:
    """The text between the markers, markers included."""
    registry = drivers() if registry is None else registry
    lines = [BEGIN, "", INTRO, "", *_table(DeviceSettings, keys_of(DeviceSettings)), ""]
    for name, (_, key) in keys_of(DeviceSettings).items():
        if key.table is not None:
            lines += [f"#### `[[devices.{name}]]` of every device", ""]
            lines += [*_table(key.table, keys_of(key.table)), ""]
    for spec in registry.values():
        lines += _driver(spec)
    lines.append(END)
    return "\n".join(lines)


def rewrite(text: str, section: str) -> str:
    """``text`` with its generated part replaced by ``section``."""
    start = text.index(BEGIN)
    end = text.index(END) + len(END)
    return text[:start] + section + text[end:]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m gateway.config_docs docs/configuration.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    text = path.read_text(encoding="utf-8")
    path.write_text(rewrite(text, devices_section()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
