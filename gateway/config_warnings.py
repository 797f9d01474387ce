"""What a valid configuration still exposes or should have looked at twice: said by
``check-config`` and at start.

None of these stop the gateway (a lab or a trusted network may want them), but each is
a way in for a neighbour on the LAN: a server reachable from the network that speaks
plain HTTP (the token and the readings cross the network in clear), and secrets that
other users of the machine can read.
"""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from gateway.config import device_warnings, parse_listen
from gateway.settings import MqttSettings, Settings


def config_warnings(settings: Settings) -> list[str]:
    """One line per exposure or doubtful device key, each starting with the key it is about."""
    found = [str(problem) for problem in device_warnings(settings)]
    secret_files: list[tuple[str, Path | None]] = []
    inline: list[str] = []
    local = settings.local
    if local is not None:
        if local.cert_file is None and not _loopback_only(local.listen):
            found.append(
                f'local.listen: "{local.listen}" is reachable from the network without TLS: '
                "the token and the readings cross it in clear; set cert_file and key_file, "
                'or listen on "127.0.0.1:PORT" behind a TLS proxy'
            )
        secret_files += [("local.token_file", local.token_file), ("local.key_file", local.key_file)]
        if local.token:
            inline.append("local.token")
    legacy = settings.uplink.mqtt is not None
    for index, entry in enumerate(settings.all_uplinks()):
        mqtt = entry.transport
        if not isinstance(mqtt, MqttSettings):
            continue
        # [uplink.mqtt] comes first in all_uplinks(), then the [[uplinks]] tables.
        where = "uplink.mqtt" if legacy and index == 0 else f"uplinks[{index - legacy}]"
        secret_files += [
            (f"{where}.password_file", mqtt.password_file),
            (f"{where}.key_file", mqtt.key_file),
        ]
        if mqtt.password:
            inline.append(f"{where}.password")
    for key, path in secret_files:
        if path is not None and (mode := _shared_mode(path)) is not None:
            found.append(
                f"{key}: {path} can be read by other users (mode {mode:04o}); "
                f"chmod 600 it (owned by the gateway's user)"
            )
    source = settings.source
    if inline and source is not None and (mode := _shared_mode(source)) is not None:
        found.append(
            f"{inline[0]}: {source} holds a secret and can be read by other users "
            f"(mode {mode:04o}); chmod 600 it, or move the secret to a file "
            "(token_file, password_file)"
        )
    return found


def _loopback_only(listen: str) -> bool:
    try:
        host, _ = parse_listen(listen)
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # Every interface (""), or a host name that may resolve to any address.
        return False


def _shared_mode(path: Path) -> int | None:
    """The permission bits of ``path`` when its group or others may read it, else None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & (stat.S_IRGRP | stat.S_IROTH) else None
