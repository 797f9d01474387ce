"""The simulated side of ``onewire``: a w1 sysfs tree in a folder, as the kernel keeps it.

``W1Tree(folder)`` plays the kernel's bus master: probes are added (plugged), changed
and removed (unplugged) while a gateway reads the folder. Each file is replaced
atomically, as the kernel's files never show half a value.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

from drivers.onewire.codec import PROBE_ID, encode_temperature, encode_w1_slave

Style = Literal["temperature", "w1_slave"]


class W1Tree:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        # The bus master is listed beside the probes, as in /sys/bus/w1/devices.
        (folder / "w1_bus_master1").mkdir(exist_ok=True)

    def plug(self, probe: str, celsius: float, style: Style = "temperature") -> None:
        """A probe appears; ``style`` picks the file a kernel of that age offers."""
        if not PROBE_ID.fullmatch(probe):
            raise ValueError(f"not a temperature probe id: {probe}")
        (self.folder / probe).mkdir(exist_ok=True)
        (self.folder / probe / "name").write_text(probe + "\n")
        self.set(probe, celsius, style=style)

    def set(
        self, probe: str, celsius: float, style: Style = "temperature", *, crc_ok: bool = True
    ) -> None:
        if style == "temperature":
            self.write(probe, "temperature", encode_temperature(celsius))
        else:
            self.write(probe, "w1_slave", encode_w1_slave(celsius, crc_ok=crc_ok))

    def write(self, probe: str, filename: str, text: str) -> None:
        """Any text in one of a probe's files: a fault the kernel may show."""
        path = self.folder / probe / filename
        temporary = path.with_name(f".{filename}.new")
        temporary.write_text(text)
        os.replace(temporary, path)

    def unplug(self, probe: str) -> None:
        shutil.rmtree(self.folder / probe)
