"""check-config warns (exit 0) about a plain-HTTP server on the network and readable secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import edge_gateway
from tests.support.local import TOKEN, issue_server_cert


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def config(tmp_path: Path, local: str, mode: int = 0o600) -> Path:
    text = f'[gateway]\nid = "gw"\ndata_dir = "{tmp_path / "data"}"\n\n[local]\n{local}\n'
    return write(tmp_path / "gateway.toml", text, mode)


def warnings(path: Path) -> list[str]:
    result = edge_gateway("check-config", "-c", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: valid; ")
    lines = result.stderr.splitlines()
    assert all(line.startswith("edge-gateway: warning: ") for line in lines), lines
    return [line.removeprefix("edge-gateway: warning: ") for line in lines]


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "[::1]:8080", "localhost:8080"])
def test_a_loopback_server_with_secrets_kept_private_gets_no_warning(
    tmp_path: Path, listen: str
) -> None:
    token = write(tmp_path / "token", TOKEN, 0o600)
    assert warnings(config(tmp_path, f'listen = "{listen}"\ntoken_file = "{token}"')) == []


@pytest.mark.parametrize("listen", [":8080", "0.0.0.0:8080", "192.168.1.20:8080", "gw:8080"])
def test_a_network_listen_without_tls_is_warned_about(tmp_path: Path, listen: str) -> None:
    token = write(tmp_path / "token", TOKEN, 0o600)
    (warning,) = warnings(config(tmp_path, f'listen = "{listen}"\ntoken_file = "{token}"'))
    assert warning.startswith(f'local.listen: "{listen}" is reachable from the network without TLS')


def test_a_network_listen_with_tls_is_fine(tmp_path: Path) -> None:
    _, cert, key = issue_server_cert(tmp_path)
    key.chmod(0o600)
    local = f'listen = ":8443"\ntoken = "{TOKEN}"\ncert_file = "{cert}"\nkey_file = "{key}"'
    assert warnings(config(tmp_path, local)) == []


def test_secret_files_and_a_config_holding_a_token_readable_by_others(tmp_path: Path) -> None:
    _, cert, key = issue_server_cert(tmp_path)
    key.chmod(0o640)
    token = write(tmp_path / "token", TOKEN, 0o644)
    path = config(
        tmp_path,
        f'token_file = "{token}"\ncert_file = "{cert}"\nkey_file = "{key}"',
        mode=0o644,
    )
    assert warnings(path) == [
        f"local.token_file: {token} can be read by other users (mode 0644); "
        "chmod 600 it (owned by the gateway's user)",
        f"local.key_file: {key} can be read by other users (mode 0640); "
        "chmod 600 it (owned by the gateway's user)",
    ]
    # The same file with the token inline: the file itself is the secret.
    inline = config(tmp_path, f'token = "{TOKEN}"', mode=0o644)
    (warning,) = warnings(inline)
    assert warning.startswith(f"local.token: {inline} holds a secret and can be read by other")


def test_an_uplink_password_file_readable_by_others_is_named_by_its_path(tmp_path: Path) -> None:
    secret = write(tmp_path / "password", "s3cret", 0o644)
    uplinks = "".join(
        f'[[uplinks]]\nname = "{name}"\nusername = "gw"\npassword_file = "{secret}"\n'
        for name in ("cloud", "site")
    )
    path = config(tmp_path, f'token = "{TOKEN}"\n\n{uplinks}')
    message = f"{secret} can be read by other users (mode 0644); chmod 600 it (owned by the"
    assert [w.split(": ", 1)[0] for w in warnings(path)] == [
        "uplinks[0].password_file",
        "uplinks[1].password_file",
    ]
    assert all(message in w for w in warnings(path))
