"""The metric families the gateway's /metrics page declares, for checking what
alert rules and dashboards built on it refer to."""

from __future__ import annotations

import re
import time
from pathlib import Path

from gateway.interfaces import DeviceStatus, GatewayView, UplinkStatus
from gateway.local.metrics_page import read_process_stats, render
from gateway.local.stream import StreamCounters
from gateway.reading import Sample
from gateway.settings import DeviceSettings, MqttSettings, Settings, StoreSettings, UplinkSettings
from gateway.store import Store

# Names in PromQL that are metrics of the gateway (the rest are functions and labels).
METRIC_NAME = re.compile(r"\b((?:edge_gateway|process)_[a-z_]+)")


async def exported_metric_names(tmp_path: Path) -> set[str]:
    """Every ``# TYPE`` name of a page rendered for a gateway with a device and an uplink."""
    settings = Settings(
        devices=(DeviceSettings(id="thermo-1", driver="serial_line", expected_interval=10.0),),
        uplink=UplinkSettings(mqtt=MqttSettings()),
    )
    store = await Store.open(tmp_path / "readings.db", StoreSettings())
    try:
        store.put_samples([Sample(device="thermo-1", sensor="t", value=21.5, ts=time.time())])
        await store.flush()
        view = GatewayView(
            settings=settings,
            log=store,
            devices={"thermo-1": _Part(DeviceStatus(state="open", last_reading_ts=time.time()))},  # type: ignore[dict-item]
            uplinks={"mqtt": _Part(UplinkStatus(state="connected"))},  # type: ignore[dict-item]
            started=time.time(),
        )
        page = render(view, StreamCounters(), read_process_stats(), time.time())
    finally:
        await store.close()
    return set(re.findall(r"^# TYPE (\S+) ", page, flags=re.MULTILINE))


def metrics_in(expr: str) -> set[str]:
    """The gateway metric families an expression reads (histogram series by family)."""
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in METRIC_NAME.findall(expr)}


class _Part:
    def __init__(self, status: DeviceStatus | UplinkStatus) -> None:
        self.status = status
