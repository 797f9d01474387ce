"""The simulated side of ``adc``: an MCP3xxx answering on gpiozero's mock SPI pins.

gpiozero ships ``MockSPIDevice``, the slave end of its software SPI over mock pins,
for devices to be written on; ``SimulatedMcp3xxx`` is the ADC. It listens to the
command the gateway's gpiozero ``MCP3008`` (or 3004, 3204, 3208) clocks out (start
bit, single/differential bit, three channel bits) and clocks back the conversion of
the voltage the test set on that channel, as the chip's datasheet has it: a sample
bit, a null bit, then the code, most significant bit first. The driver thus talks to
it through gpiozero's real MCP3xxx class and SPI bit-banging.
"""

from __future__ import annotations

from typing import Any, Literal

from gpiozero.pins.mock import MockSPIDevice

# The Raspberry Pi's SPI0 pins (BCM), which gpiozero uses for port 0 when it falls back
# to software SPI, as it does on mock pins; chip select 0 or 1.
SPI0_CLOCK, SPI0_MOSI, SPI0_MISO = 11, 10, 9
SPI0_SELECT = (8, 7)
# Chips whose command is start, single/differential, three channel bits.
CHIPS = {"MCP3004": (10, 4), "MCP3008": (10, 8), "MCP3204": (12, 4), "MCP3208": (12, 8)}

Phase = Literal["idle", "mode", "channel", "result"]


class SimulatedMcp3xxx(MockSPIDevice):  # type: ignore[misc]  # gpiozero has no type hints
    def __init__(
        self,
        pin_factory: Any,
        chip: str = "MCP3008",
        *,
        vref: float = 3.3,
        spi_device: int = 0,
    ) -> None:
        super().__init__(
            SPI0_CLOCK,
            SPI0_MOSI,
            SPI0_MISO,
            SPI0_SELECT[spi_device],
            pin_factory=pin_factory,
        )
        self.bits, channels = CHIPS[chip]
        self.vref = vref
        # The voltage on each input, set by the test.
        self.volts = [0.0] * channels
        self.conversions = 0
        self._phase: Phase = "idle"
        self._single = True

    def on_start(self) -> None:
        super().on_start()
        self._phase = "idle"

    def on_bit(self) -> None:
        received: list[int] = self.rx_buf
        bit = received[-1]
        if self._phase == "idle":
            # Leading zeros align the reply to whole bytes; the first 1 is the start bit.
            if bit:
                self._phase = "mode"
        elif self._phase == "mode":
            self._single = bool(bit)
            self._phase = "channel"
            # The base class collects the bits; the channel is the next three.
            received.clear()
        elif self._phase == "channel" and len(received) == 3:
            # The sample bit and the null bit, then the code.
            channel = int(self.rx_word())
            self.tx_word(self.code(self._single, channel), self.bits + 2)
            self.conversions += 1
            self._phase = "result"

    def code(self, single: bool, channel: int) -> int:
        """The chip's output code for ``channel`` (differential: IN+ = channel, IN- = its
        pair, clipped at 0 as the chip does)."""
        volts = self.volts[channel] if single else self.volts[channel] - self.volts[channel ^ 1]
        clipped = min(max(volts, 0.0), self.vref)
        # Typed here: attributes of a subclass of an untyped class read as Any.
        fraction: float = clipped / self.vref
        steps: int = 2**self.bits - 1
        return round(fraction * steps)
