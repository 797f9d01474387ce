"""The shipped unit file, checked by systemd's own tools.

No systemd runs as PID 1 here, so the unit is not started; ``systemd-analyze verify``
loads it the way the manager would (every directive parsed, every dependency
resolved, every command checked for an executable) inside a filesystem root made
for the test, and ``systemd-analyze security --offline`` scores its sandbox.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.systemd import (
    MAX_EXPOSURE,
    REPO,
    UNIT,
    exposure,
    make_root,
    service_section,
    verify,
)


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    # The real console script stands at ExecStart's path; verify checks that the
    # command exists and is executable (the Ansible test verifies the installed one).
    make_root(tmp_path, UNIT, REPO / ".venv/bin/edge-gateway")
    result = verify(tmp_path, UNIT.name)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    # The control for the test above: the same root without the program fails.
    make_root(tmp_path, UNIT, REPO / ".venv/bin/edge-gateway")
    (tmp_path / "opt/edge-gateway/venv/bin/edge-gateway").unlink()
    result = verify(tmp_path, UNIT.name)
    assert result.returncode != 0
    assert "/opt/edge-gateway/venv/bin/edge-gateway is not executable" in result.stderr


def test_security_exposure_is_at_most_1_5() -> None:
    score, result = exposure(UNIT)
    assert score <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout


def test_security_score_is_not_vacuous(tmp_path: Path) -> None:
    # The control: the same unit without its sandbox scores far above the bound.
    bare = tmp_path / UNIT.name
    kept = ("Type", "NotifyAccess", "ExecStart", "ExecReload", "User", "Group")
    lines = [
        line
        for line in UNIT.read_text().splitlines()
        if line.startswith("[") or line.split("=", 1)[0] in kept
    ]
    bare.write_text("\n".join(lines) + "\n")
    score, result = exposure(bare)
    assert score > 5.0
    assert result.returncode != 0


def test_unit_is_a_notify_service_with_watchdog_and_reload() -> None:
    service = service_section(UNIT)
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["Restart"] == ["on-failure"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["ExecStart"] == [
        "/opt/edge-gateway/venv/bin/edge-gateway run -c /etc/edge-gateway/gateway.toml"
    ]
    assert int(service["WatchdogSec"][0]) > 0
    assert service["User"] == ["edge-gateway"]
    assert service["StateDirectory"] == ["edge-gateway"]
    assert service["ConfigurationDirectory"] == ["edge-gateway"]


def test_the_unit_itself_allows_no_device_and_one_port() -> None:
    # Ports, GPIO and the configured listening port come from the generated
    # drop-in (tests/test_systemd_dropin.py), never as whole classes from here.
    service = service_section(UNIT)
    assert service["DevicePolicy"] == ["closed"]
    assert "DeviceAllow" not in service
    assert service["SupplementaryGroups"] == ["dialout"]
    assert service["SocketBindDeny"] == ["any"]
    assert service["SocketBindAllow"] == ["tcp:8080"]


def test_resources_are_bounded() -> None:
    service = service_section(UNIT)
    assert service["LimitNOFILE"] == ["4096"]
    assert service["MemoryMax"] == ["256M"]
    assert service["TasksMax"] == ["64"]
