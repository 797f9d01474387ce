"""The command router: every request is checked here, then run by its handler.

The same router serves MQTT and the local API. Its checks, in order: size, rate,
JSON shape, known command, ``[commands] allow``, a request id answered before
(its stored answer is returned, nothing runs again), expiry, then the handler's
own argument checks. A request refused by a check gets ``ok: false`` with the
reason and is counted under that reason; nothing a request carries can raise
out of ``handle``.

Only answers of requests that ran are remembered: a request refused for a
reason that may pass later (rate, expiry, a command allowed after a reload) can
be sent again with the same id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from gateway.commands.journal import AnswerJournal
from gateway.commands.names import COMMANDS, READ_ONLY
from gateway.commands.signing import SignatureError, verified
from gateway.errors import GatewayError
from gateway.interfaces import CommandAnswer, CommandStatus
from gateway.rate import TokenBucket
from gateway.settings import CommandSettings

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 128
# A command (a device that never answers a write, say) is given up after this long.
COMMAND_TIMEOUT = 60.0
# Requests shown in status.
RECENT = 20
# A JSON answer bigger than this is replaced by an error (the broker or the client
# may refuse it, and it would be remembered).
MAX_ANSWER_BYTES = 256 * 1024

Args = Mapping[str, object]
Handler = Callable[[Args], Awaitable[object]]


class CommandError(GatewayError):
    """The command ran and failed: its message is the answer's ``error``."""


class BadArgs(CommandError):
    """The request's arguments are wrong: refused before anything ran."""


class CommandRouter:
    """Implements ``gateway.interfaces.Commands``."""

    def __init__(
        self,
        settings: CommandSettings,
        journal: AnswerJournal,
        handlers: Mapping[str, Handler],
        clock: Callable[[], float] = time.time,
        key: bytes | None = None,
    ) -> None:
        """``key``: the HMAC key of ``settings.hmac_key_file`` (None: requests unsigned)."""
        self.status = CommandStatus()
        self.journal = journal
        self.handlers = dict(handlers)
        self._clock = clock
        self._running: dict[str, asyncio.Future[dict[str, object]]] = {}
        self.settings = settings
        self.key = key
        self._bucket = TokenBucket(settings.max_per_second, burst=settings.max_per_second)
        # One append to the journal file at a time; the appends still under way.
        self._journal_lock = asyncio.Lock()
        self._writes: set[asyncio.Task[None]] = set()

    def configure(self, settings: CommandSettings, key: bytes | None) -> None:
        """Take the ``[commands]`` of a reloaded configuration, and its key."""
        self.key = key
        if settings.max_per_second != self.settings.max_per_second:
            self._bucket = TokenBucket(settings.max_per_second, burst=settings.max_per_second)
        self.settings = settings
        self.journal.keep = settings.remember
        self.journal.count = settings.remember_count

    async def handle(
        self, command: str, payload: bytes, *, via: str, expires_at: float | None = None
    ) -> CommandAnswer:
        request_id: str | None = None
        try:
            request_id, args = self._check(command, payload, expires_at)
            answer = CommandAnswer(await self._answer(command, request_id, args))
        except _Refused as refused:
            self.status.refused[refused.reason] = self.status.refused.get(refused.reason, 0) + 1
            request_id = refused.request_id
            body: dict[str, object] = {"id": request_id, "ok": False, "error": str(refused)}
            answer = CommandAnswer(body, refused.reason)
        self._record(command, request_id, via, answer)
        return answer

    def _check(
        self, command: str, payload: bytes, expires_at: float | None
    ) -> tuple[str | None, Args]:
        settings = self.settings
        if len(payload) > settings.max_bytes:
            size = len(payload)
            raise _Refused(
                "too_large", f"request too large: {size} bytes, at most {settings.max_bytes}"
            )
        if not self._bucket.try_take():
            raise _Refused(
                "rate_limited", f"too many requests: at most {settings.max_per_second:g} per second"
            )
        try:
            request = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as err:
            raise _Refused("bad_json", f"request is not JSON: {err}") from None
        except RecursionError:
            raise _Refused("bad_json", "request is nested too deeply") from None
        if not isinstance(request, dict):
            raise _Refused("bad_json", "request must be a JSON object")
        if self.key is not None:
            request = self._verified(command, request)
        request_id = request.get("id")
        if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_ID_LENGTH:
            raise _Refused(
                "bad_request", f'"id" must be a string of 1 to {MAX_ID_LENGTH} characters'
            )
        args = request.get("args", {})
        if not isinstance(args, dict):
            raise _Refused("bad_args", '"args" must be a JSON object', request_id)
        expires = request.get("expires")
        if expires is not None and (
            not isinstance(expires, int | float)
            or isinstance(expires, bool)
            or not math.isfinite(expires)
        ):
            raise _Refused("bad_request", '"expires" must be a number (epoch seconds)', request_id)
        if self.key is not None and expires is None:
            raise _Refused("bad_signature", 'a signed request must carry "expires"', request_id)
        if self.key is not None and expires is not None and expires > self._horizon():
            raise _Refused(
                "bad_signature",
                f'"expires" may be at most {settings.remember:g}s ahead (ids are '
                "remembered that long)",
                request_id,
            )
        if command not in COMMANDS:
            raise _Refused("unknown_command", f"unknown command {command!r}", request_id)
        if command not in settings.allow:
            raise _Refused("not_allowed", f"command {command!r} is not allowed here", request_id)
        if self.journal.get(request_id) is None and request_id not in self._running:
            now = self._clock()
            if expires is not None and expires < now:
                raise _Refused("expired", "request expired (its expires field)", request_id)
            if expires_at is not None and expires_at < now:
                raise _Refused("expired", "request expired (message expiry)", request_id)
        return request_id, args

    def _horizon(self) -> float:
        """The latest ``expires`` a signed request may carry: a replay after its id is
        forgotten must find it expired."""
        return self._clock() + self.settings.remember

    def _verified(self, command: str, outer: dict[str, object]) -> dict[str, object]:
        assert self.key is not None
        try:
            request = verified(self.key, command, outer)
        except SignatureError as err:
            raise _Refused("bad_signature", str(err)) from None
        if not isinstance(request, dict):
            raise _Refused("bad_json", "the signed request must be a JSON object")
        return request

    async def _answer(self, command: str, request_id: str | None, args: Args) -> dict[str, object]:
        assert request_id is not None
        remembered = self.journal.get(request_id)
        if remembered is not None:
            self.status.duplicates += 1
            return remembered
        running = self._running.get(request_id)
        if running is not None:
            # Sent again while the first copy still runs (an MQTT redelivery).
            self.status.duplicates += 1
            return await asyncio.shield(running)
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._running[request_id] = future
        try:
            body = await self._run(command, request_id, args)
        except asyncio.CancelledError:
            future.cancel()
            del self._running[request_id]
            raise
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: a duplicate waiting on it gets it
            del self._running[request_id]
            raise
        if command in READ_ONLY:
            # Answered at once, its id remembered now and written to disk behind the
            # answer: with readings flowing, the journal's fsync waits behind the store's
            # commits on the same filesystem (tens of ms, over 100 on a busy disk). A
            # crash before it is written lets a retry run the command again, which
            # changes nothing.
            at = self.journal.remember(request_id, body)
            task = asyncio.get_running_loop().create_task(
                self._remember(
                    command, request_id, lambda: self.journal.write(request_id, at, body)
                )
            )
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
            future.set_result(body)
            del self._running[request_id]
            return body
        try:
            await self._remember(command, request_id, lambda: self.journal.add(request_id, body))
        finally:
            future.set_result(body)
            del self._running[request_id]
        return body

    async def _remember(self, command: str, request_id: str, append: Callable[[], None]) -> None:
        async with self._journal_lock:
            try:
                await asyncio.to_thread(append)
            except OSError as err:
                log.error(
                    "command %s: cannot remember the answer to %s: %s", command, request_id, err
                )

    async def written(self) -> None:
        """Wait until every answer remembered so far is in the journal file."""
        await asyncio.gather(*self._writes)

    async def _run(self, command: str, request_id: str, args: Args) -> dict[str, object]:
        handler = self.handlers.get(command)
        if handler is None:
            raise _Refused(
                "unknown_command", f"command {command!r} is not available here", request_id
            )
        outcome = "ok"
        body: dict[str, object]
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                result = await handler(args)
            body = {"id": request_id, "ok": True, "result": result}
            _check_size(body)
        except BadArgs as err:
            raise _Refused("bad_args", str(err), request_id) from None
        except CommandError as err:
            outcome = "failed"
            body = {"id": request_id, "ok": False, "error": str(err)}
        except TimeoutError:
            outcome = "failed"
            error = f"did not finish within {COMMAND_TIMEOUT:g}s"
            body = {"id": request_id, "ok": False, "error": error}
        except Exception as err:
            # A bug in a handler or a driver: answered and logged, the gateway runs on.
            log.exception("command %s id=%s failed", command, request_id)
            outcome = "failed"
            body = {"id": request_id, "ok": False, "error": f"internal error: {err}"}
        key = (command, outcome)
        self.status.executed[key] = self.status.executed.get(key, 0) + 1
        return body

    def _record(
        self, command: str, request_id: str | None, via: str, answer: CommandAnswer
    ) -> None:
        body = answer.body
        ok = body.get("ok") is True
        error = body.get("error")
        # Names and ids come from outside: quoted, so that they cannot forge log lines.
        line = f"command {json.dumps(command[:64])} id={json.dumps(request_id)} via {via}: "
        # Logged as written ("%s"), so that the flood guard of gateway.logs tells
        # requests apart by their id instead of folding them into one template; the
        # rate limit bounds how many there can be.
        if ok:
            log.info("%s", line + "ok")
        else:
            log.warning("%s", line + str(error))
        self.status.recent.append(
            {
                "time": self._clock(),
                "command": command[:64],
                "id": request_id,
                "via": via,
                "ok": ok,
                "error": error,
            }
        )
        del self.status.recent[:-RECENT]


def _check_size(body: dict[str, object]) -> None:
    try:
        size = len(json.dumps(body))
    except (TypeError, ValueError) as err:
        raise CommandError(f"the result cannot be sent as JSON: {err}") from None
    if size > MAX_ANSWER_BYTES:
        raise CommandError(f"the result is larger than {MAX_ANSWER_BYTES} bytes")


class _Refused(Exception):
    def __init__(self, reason: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.request_id = request_id
