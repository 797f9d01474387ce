"""The command router and the built-in commands, against a real journal file and store."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from gateway.commands.builtins import builtin_handlers
from gateway.commands.journal import AnswerJournal
from gateway.commands.router import Args, CommandError, CommandRouter, Handler
from gateway.commands.signing import sign
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.interfaces import DeviceStatus, Driver, GatewayView
from gateway.settings import CommandSettings, Settings, WriteRule
from gateway.store import Store
from tests.support.commands import Runtime, request

ALL = (
    "ping",
    "status",
    "log_level",
    "reload",
    "device.enable",
    "device.disable",
    "device.read",
    "device.write",
)


class Counting:
    """A handler that counts its runs."""

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self, args: Args) -> object:
        self.runs += 1
        if args.get("fail"):
            raise CommandError("it failed")
        return {"run": self.runs}


def router_with(
    tmp_path: Path, handler: Handler, **settings: object
) -> tuple[CommandRouter, AnswerJournal]:
    config = CommandSettings(**{"allow": ALL, **settings})  # type: ignore[arg-type]
    journal = AnswerJournal(tmp_path / "commands.jsonl", config.remember, config.remember_count)
    journal.load()
    return CommandRouter(config, journal, {name: handler for name in ALL}), journal


async def test_a_request_id_seen_again_runs_once_and_gets_the_same_answer(tmp_path: Path) -> None:
    handler = Counting()
    router, _ = router_with(tmp_path, handler)
    first = await router.handle("ping", request("a-1"), via="test")
    again = await router.handle("ping", request("a-1"), via="test")
    assert first.body == again.body == {"id": "a-1", "ok": True, "result": {"run": 1}}
    assert handler.runs == 1
    assert router.status.duplicates == 1
    # Two copies at once (a redelivery while the first runs): still one run.
    both = await asyncio.gather(
        router.handle("ping", request("a-2"), via="test"),
        router.handle("ping", request("a-2"), via="test"),
    )
    assert both[0].body == both[1].body
    assert handler.runs == 2


async def test_ids_are_remembered_across_a_restart_within_bounds(tmp_path: Path) -> None:
    handler = Counting()
    router, _ = router_with(tmp_path, handler, remember_count=3)
    for n in range(5):
        await router.handle("ping", request(f"r-{n}"), via="test")
    # A ping is answered before its id is on disk (it changes nothing): a clean stop
    # lets the appends finish.
    await router.written()
    # A torn last line (power cut mid-append) is skipped, the rest is read.
    with (tmp_path / "commands.jsonl").open("ab") as file:
        file.write(b'{"id": "torn", "at"')
    restarted, journal = router_with(tmp_path, handler, remember_count=3)
    assert len(journal) == 3
    answer = await restarted.handle("ping", request("r-4"), via="test")
    assert answer.body["result"] == {"run": 5}
    assert handler.runs == 5
    # The oldest ids were forgotten (count bound): such a request runs again.
    await restarted.handle("ping", request("r-0"), via="test")
    assert handler.runs == 6


async def test_only_commands_that_change_nothing_are_answered_before_their_id_is_on_disk(
    tmp_path: Path,
) -> None:
    handler = Counting()
    router, _ = router_with(tmp_path, handler)
    journal_file = tmp_path / "commands.jsonl"
    await router.handle("device.disable", request("d-1", {"device": "x"}), via="test")
    assert b'"d-1"' in journal_file.read_bytes()
    await router.handle("ping", request("p-1"), via="test")
    # Remembered at once, in memory: a copy sent now runs nothing.
    await router.handle("ping", request("p-1"), via="test")
    assert handler.runs == 2
    await router.written()
    assert b'"p-1"' in journal_file.read_bytes()


async def test_ids_are_forgotten_after_their_time(tmp_path: Path) -> None:
    now = [1000.0]
    journal = AnswerJournal(tmp_path / "c.jsonl", keep=60.0, count=10, clock=lambda: now[0])
    journal.add("old", {"id": "old", "ok": True})
    now[0] += 61
    journal.add("new", {"id": "new", "ok": True})
    assert journal.get("old") is None
    reloaded = AnswerJournal(tmp_path / "c.jsonl", keep=60.0, count=10, clock=lambda: now[0])
    reloaded.load()
    assert reloaded.get("old") is None
    assert reloaded.get("new") == {"id": "new", "ok": True}


async def test_the_journal_is_compacted_when_it_grows(tmp_path: Path) -> None:
    journal = AnswerJournal(tmp_path / "c.jsonl", keep=3600.0, count=4)
    for n in range(20):
        journal.add(f"id-{n}", {"n": n})
    lines = (tmp_path / "c.jsonl").read_bytes().splitlines()
    assert len(lines) <= 8
    reloaded = AnswerJournal(tmp_path / "c.jsonl", keep=3600.0, count=4)
    reloaded.load()
    assert [reloaded.get(f"id-{n}") for n in range(16, 20)] == [{"n": n} for n in range(16, 20)]
    assert reloaded.get("id-15") is None


@pytest.mark.parametrize(
    ("command", "payload", "reason", "error"),
    [
        ("ping", b"{not json", "bad_json", "request is not JSON"),
        ("ping", b"[1, 2]", "bad_json", "must be a JSON object"),
        ("ping", b"[" * 4000, "bad_json", "nested too deeply"),
        ("ping", b'{"args": {}}', "bad_request", '"id" must be a string'),
        ("ping", b'{"id": "x", "args": 5}', "bad_args", '"args" must be a JSON object'),
        ("ping", b'{"id": "x", "expires": "soon"}', "bad_request", '"expires" must be a number'),
        ("format_disk", b'{"id": "x"}', "unknown_command", "unknown command 'format_disk'"),
        ("reload", b'{"id": "x"}', "not_allowed", "command 'reload' is not allowed"),
        ("ping", b'{"id": "x", "expires": 1}', "expired", "request expired"),
        ("ping", b'{"id": "' + b"x" * 5000 + b'"}', "too_large", "request too large"),
    ],
)
async def test_bad_requests_are_answered_and_counted(
    tmp_path: Path, command: str, payload: bytes, reason: str, error: str
) -> None:
    handler = Counting()
    router, _ = router_with(tmp_path, handler, allow=("ping", "status"), max_bytes=4096)
    answer = await router.handle(command, payload, via="test")
    assert answer.refused == reason
    assert answer.body["ok"] is False
    assert error in str(answer.body["error"])
    assert router.status.refused == {reason: 1}
    assert handler.runs == 0
    # A refused request is not remembered: the same id may be sent again.
    ok = await router.handle("ping", request("x"), via="test")
    assert ok.body["ok"] is True


async def test_message_expiry_refuses_a_request_that_waited_too_long(tmp_path: Path) -> None:
    router, _ = router_with(tmp_path, Counting())
    answer = await router.handle("ping", request("e"), via="mqtt", expires_at=time.time() - 1)
    assert answer.refused == "expired"
    assert "message expiry" in str(answer.body["error"])


async def test_too_many_requests_per_second_are_refused(tmp_path: Path) -> None:
    handler = Counting()
    router, _ = router_with(tmp_path, handler, max_per_second=2.0)
    answers = [await router.handle("ping", request(f"q-{n}"), via="test") for n in range(10)]
    refused = [a for a in answers if a.refused == "rate_limited"]
    assert refused
    assert "too many requests" in str(refused[0].body["error"])
    assert handler.runs + len(refused) == 10


async def test_a_failing_or_broken_handler_is_an_answer_not_a_crash(tmp_path: Path) -> None:
    async def broken(_args: Args) -> object:
        raise RuntimeError("bug")

    router, _ = router_with(tmp_path, Counting())
    failed = await router.handle("ping", request("f", {"fail": True}), via="test")
    assert failed.body == {"id": "f", "ok": False, "error": "it failed"}
    router.handlers["status"] = broken
    crashed = await router.handle("status", request("g"), via="test")
    assert crashed.body == {"id": "g", "ok": False, "error": "internal error: bug"}
    assert router.status.executed == {("ping", "failed"): 1, ("status", "failed"): 1}


class WritableDriver:
    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.status = DeviceStatus()
        self.written: list[tuple[str, object]] = []

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def write(self, sensor: str, value: object) -> object:
        self.written.append((sensor, value))
        return value

    def read_now(self) -> dict[str, object]:
        return {"setpoint": self.written[-1][1] if self.written else None}


class ReadOnlyDriver:
    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.status = DeviceStatus()

    async def run(self) -> None:
        await asyncio.Event().wait()


async def test_writes_follow_the_write_rules_and_the_driver(store: Store, tmp_path: Path) -> None:
    meter = WritableDriver("meter-1")
    devices: dict[str, Driver] = {"meter-1": meter, "probe": ReadOnlyDriver("probe")}
    view = GatewayView(Settings(), store, devices, {}, time.time())
    settings = CommandSettings(
        allow=ALL,
        writes=(
            WriteRule("meter-1", "setpoint", min=5.0, max=30.0),
            WriteRule("probe", "line"),
        ),
    )
    journal = AnswerJournal(tmp_path / "c.jsonl", 60.0, 10)
    router = CommandRouter(
        settings, journal, builtin_handlers(Runtime(view), view, lambda: settings)
    )

    async def write(request_id: str, args: dict[str, object]) -> dict[str, object]:
        return (await router.handle("device.write", request(request_id, args), via="t")).body

    ok = await write("w1", {"device": "meter-1", "sensor": "setpoint", "value": 21.5})
    assert ok["ok"] is True
    assert meter.written == [("setpoint", 21.5)]
    too_high = await write("w2", {"device": "meter-1", "sensor": "setpoint", "value": 99})
    assert "above the allowed maximum 30" in str(too_high["error"])
    not_listed = await write("w3", {"device": "meter-1", "sensor": "mode", "value": 1})
    assert "not allowed" in str(not_listed["error"])
    text = await write("w4", {"device": "meter-1", "sensor": "setpoint", "value": "hot"})
    assert "must be a number" in str(text["error"])
    cannot = await write("w5", {"device": "probe", "sensor": "line", "value": "RESET"})
    assert cannot == {"id": "w5", "ok": False, "error": "device probe cannot be written"}
    unknown = await write("w6", {"device": "nope", "sensor": "x", "value": 1})
    assert "no device 'nope'" in str(unknown["error"])
    assert meter.written == [("setpoint", 21.5)]
    assert router.status.refused == {"bad_args": 4}
    read = await router.handle("device.read", request("r1", {"device": "meter-1"}), via="t")
    assert read.body["result"] == {"device": "meter-1", "values": {"setpoint": 21.5}}
    ping = await router.handle("ping", request("p1"), via="t")
    assert ping.body["result"] == {"gateway": view.gateway_id, "last_seq": store.last_seq}
    reload = await router.handle("reload", request("l1"), via="t")
    assert reload.body == {"id": "l1", "ok": False, "error": "no file"}


def test_the_commands_section_is_checked() -> None:
    meter = {"id": "meter-1", "driver": "serial_line", "port": "/dev/x"}
    settings = parse_config(
        {
            "devices": [meter],
            "commands": {
                "allow": ["ping", "device.write"],
                "max_per_second": 5,
                "remember": "1h",
                "writes": [{"device": "meter-1", "sensor": "setpoint", "min": 5, "max": 30}],
            },
        },
        None,
    )
    assert settings.commands.allow == ("ping", "device.write")
    assert settings.commands.remember == 3600.0
    assert settings.commands.writes == (WriteRule("meter-1", "setpoint", 5.0, 30.0),)
    with pytest.raises(ConfigError) as bad:
        parse_config(
            {
                "devices": [meter],
                "commands": {
                    "allow": ["pnig"],
                    "writes": [
                        {"device": "meter-1", "sensor": "s", "min": 3, "max": 1},
                        {"x": 1},
                        {"device": "meter-2", "sensor": "s"},
                    ],
                },
            },
            None,
        )
    text = str(bad.value)
    assert 'did you mean "ping"' in text
    assert "commands.writes[0].max" in text
    assert "commands.writes[1].device: required" in text
    assert "commands.writes[2].device: no device 'meter-2' in the file" in text


def envelope(key: bytes, command: str, inner: dict[str, object], sig: str | None = None) -> bytes:
    signed = json.dumps(inner)
    return json.dumps({"signed": signed, "sig": sig or sign(key, command, signed)}).encode()


async def test_with_a_key_only_signed_requests_run_and_replays_fail(tmp_path: Path) -> None:
    key = b"k" * 32
    handler = Counting()
    config = CommandSettings(allow=ALL, remember=3600.0)
    journal = AnswerJournal(tmp_path / "c.jsonl", config.remember, config.remember_count)
    router = CommandRouter(config, journal, {name: handler for name in ALL}, key=key)
    soon = time.time() + 60
    good = envelope(key, "ping", {"id": "s-1", "expires": soon})

    async def reason(command: str, payload: bytes) -> str | None:
        return (await router.handle(command, payload, via="test")).refused

    assert await reason("ping", request("plain", expires=soon)) == "bad_signature"
    assert await reason("ping", envelope(key, "ping", {"id": "s-0"}, "00" * 32)) == "bad_signature"
    assert await reason("ping", envelope(b"x" * 32, "ping", {"id": "s-0"})) == "bad_signature"
    # Signed for ping, sent as reload: refused.
    assert await reason("reload", good) == "bad_signature"
    assert await reason("ping", envelope(key, "ping", {"id": "s-2"})) == "bad_signature"
    far = {"id": "s-3", "expires": time.time() + 7200}
    assert await reason("ping", envelope(key, "ping", far)) == "bad_signature"
    assert handler.runs == 0
    first = await router.handle("ping", good, via="test")
    assert first.body == {"id": "s-1", "ok": True, "result": {"run": 1}}
    # The same signed request again: answered from memory, not run again.
    assert (await router.handle("ping", good, via="test")).body == first.body
    assert handler.runs == 1
    assert router.status.refused == {"bad_signature": 6}


def test_the_hmac_key_file_is_checked(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"tiny\n")
    with pytest.raises(ConfigError, match=r"commands.hmac_key_file: .*at least 16"):
        parse_config({"commands": {"hmac_key_file": str(short)}}, None)
    good = tmp_path / "good.key"
    good.write_bytes(b"0123456789abcdef0123\n")
    settings = parse_config({"commands": {"hmac_key_file": str(good)}}, None)
    assert settings.commands.hmac_key_file == good


async def test_a_command_that_never_ends_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hangs(_args: Args) -> object:
        await asyncio.Event().wait()
        return None

    monkeypatch.setattr("gateway.commands.router.COMMAND_TIMEOUT", 0.05)
    router, _ = router_with(tmp_path, hangs)
    answer = await router.handle("device.write", request("h"), via="test")
    assert answer.body == {"id": "h", "ok": False, "error": "did not finish within 0.05s"}
