"""Whether the running gateway is healthy, and if not, every reason why."""

from __future__ import annotations

from gateway.interfaces import GatewayView


def uplink_down_seconds(view: GatewayView, name: str, now: float) -> float:
    """How long uplink ``name`` has been without a connection (0 while connected)."""
    status = view.uplinks[name].status
    if status.state == "connected":
        return 0.0
    since = status.disconnected_since or view.started
    return max(0.0, now - since)


def reasons(view: GatewayView, now: float) -> list[str]:
    """Every reason the gateway is degraded; empty when all is well."""
    settings = view.settings
    found: list[str] = []
    # Low free space is one of these: the store measures it as it writes.
    degraded = view.log.stats().degraded
    if degraded:
        found.append(f"store: {degraded}")
    for name in sorted(view.uplinks):
        down = uplink_down_seconds(view, name, now)
        if down > settings.health.uplink_down_after:
            found.append(f"uplink {name}: down for {down:.0f} s")
    for device in settings.devices:
        driver = view.devices.get(device.id)
        if driver is None or device.expected_interval <= 0:
            continue
        last = driver.status.last_reading_ts or view.started
        silent = now - last
        if silent > device.expected_interval * settings.health.device_silent_factor:
            found.append(f"device {device.id}: silent for {silent:.0f} s")
    return found
