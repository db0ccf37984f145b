"""Logging for people (``text``) or machines (``json``, one object per line), and an access
log that never shows a query value (where Mintsoft puts the ``APIKEY``).

No line can be forged or show a key: the text format escapes every control character of a
message (CR, LF, ESC, the rest of C0 and C1, DEL, and other unprintables) as ``\\xNN``, so
a percent-decoded path or an order id from a body stays on its line (JSON escapes them
already); and aiohttp's record of a request its parser refused, which quotes the raw
request line or header (``APIKEY=…``, ``Authorization: …``) in an ERROR traceback, becomes
one WARNING line without those bytes, at most one per :data:`REFUSED_LOG_INTERVAL`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, RequestKey

WEBHOOK_EVENT: RequestKey[str] = RequestKey("bridge.webhook_event", str)
"""Set by a webhook route on its request, so the access log line names the event."""


class LoggedWebhook(NamedTuple):
    """What the access log line needs of a webhook: not its body, which aiohttp would keep
    alive with an idle keep-alive connection's last request until the next one arrives."""

    message_id: str
    headers: Mapping[str, str]


WEBHOOK_LOGGED: RequestKey[LoggedWebhook] = RequestKey("bridge.webhook_logged")
"""Set once a webhook's envelope is built, so the access log line carries its message id,
order id and request id: one enriched line per webhook instead of a second log line."""

CLIENT_CLOSED: RequestKey[bool] = RequestKey("bridge.client_closed", bool)
"""Set when the client closed the connection before its whole body arrived: nothing could
be answered, and the access log line says so instead of a status sent."""

CLIENT_CLOSED_STATUS = 499
"""The status an access log line shows for :data:`CLIENT_CLOSED` (nginx's "client closed
request"); it is never sent, there being nobody to send it to."""

Fields = Mapping[str, Any]

_EXTRA_FIELDS = (
    "event",
    "message_id",
    "order_id",
    "request_id",
    "status",
    "latency_ms",
    "method",
    "path",
    "remote",
    "subscriber",
    "attempt",
)


def escape_controls(text: str) -> str:
    """``text`` with every unprintable character (control characters, line and paragraph
    separators, bidi overrides) written as ``\\xNN``/``\\uNNNN``; printable text, non-ASCII
    letters included, unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


class LineFormatter(logging.Formatter):
    """``logging.Formatter`` in UTC that formats the date and time once per second, not once
    per record (the access log writes a line per request), and escapes control characters
    in a message (:func:`escape_controls`), so that no field can forge a line."""

    def __init__(self, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self._second = -1
        self._datefmt: str | None = None
        self._stamp = ""

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The text format's message, control characters escaped (a traceback that follows
        # keeps its lines). The JSON format builds its own line and escapes by its nature.
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = self._second_stamp(record.created, datefmt)
        if datefmt:
            return stamp
        return f"{stamp},{int(record.msecs):03d}"

    def _second_stamp(self, created: float, datefmt: str | None) -> str:
        second = int(created)
        if second != self._second or datefmt != self._datefmt:
            self._stamp = time.strftime(datefmt or self.default_time_format, time.gmtime(second))
            self._second, self._datefmt = second, datefmt
        return self._stamp

    def access_line(
        self, created: float, name: str, message: str, args: tuple[Any, ...], fields: Fields
    ) -> str:
        """The line :meth:`format` gives an INFO record of logger ``name`` created at
        ``created`` with ``message % args`` and the extra ``fields``, without the record
        (an access log line, or a worker line about one message)."""
        raise NotImplementedError


_MESSAGE_FIELDS = ("subscriber", "event", "message_id", "order_id", "request_id", "attempt")
"""The fields of a worker line about one message, appended to text lines as ``key=value``
(JSON lines carry them as keys): one webhook can be followed in either format."""


class TextFormatter(LineFormatter):
    """``time LEVEL logger: message``, then ``key=value`` for a worker line's message fields."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def access_line(
        self, created: float, name: str, message: str, args: tuple[Any, ...], fields: Fields
    ) -> str:
        stamp = self._second_stamp(created, None)
        line = f"{stamp},{_msecs(created):03d} INFO {name}: {escape_controls(message % args)}"
        if fields.get("subscriber") is None:
            return line
        return f"{line} {_pairs(fields)}"

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__
        if fields.get("subscriber") is None:  # not a worker line (the access log's hot path)
            return super().format(record)
        line = super().format(record)
        head, newline, trace = line.partition("\n")  # the fields stay on the message's line
        return f"{head} {_pairs(fields)}{newline}{trace}"


def _pairs(fields: Fields) -> str:
    """A worker line's message fields as ``key=value`` (control characters escaped)."""
    # A plain loop, escape_controls only for what needs it: written once per message.
    pairs = []
    for name in _MESSAGE_FIELDS:
        value = fields.get(name)
        if value is not None:
            text = str(value)
            pairs.append(f"{name}={text if text.isprintable() else escape_controls(text)}")
    return " ".join(pairs)


class JsonFormatter(LineFormatter):
    """One JSON object per line: time, level, logger, message, and known extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, _JSON_TIME) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data).decode()

    def access_line(
        self, created: float, name: str, message: str, args: tuple[Any, ...], fields: Fields
    ) -> str:
        data: dict[str, Any] = {
            "time": f"{self._second_stamp(created, _JSON_TIME)}.{_msecs(created):03d}Z",
            "level": "info",
            "logger": name,
            "message": message % args,
        }
        for field in _EXTRA_FIELDS:
            value = fields.get(field)
            if value is not None:
                data[field] = value
        return orjson.dumps(data).decode()


_JSON_TIME = "%Y-%m-%dT%H:%M:%S"


def _msecs(created: float) -> int:
    # As logging.LogRecord computes its msecs.
    return int((created - int(created)) * 1000)


class TurnBatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that, on a thread running an event loop, writes the lines logged
    during one loop turn with one write (the access log logs a line per request; a write
    per line is a system call per request). Elsewhere, and on ``flush``, it writes at once
    (a line from another thread while a turn's write is due goes with that write); nothing
    waits longer than the current loop turn."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write_line(line)

    def write_line(self, line: str) -> None:
        """Write one formatted ``line`` (without its terminator), batched as :meth:`emit`."""
        line += self.terminator
        with self.lock:  # type: ignore[union-attr]
            if self._scheduled:  # a flush is due at the end of this loop turn
                self._pending.append(line)
                return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line)
            if loop is not None and loop.is_running():
                if not self._scheduled:
                    self._scheduled = True
                    loop.call_soon(self.flush)
                return
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._scheduled = False
            if self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                try:
                    self.stream.write(text)
                except Exception:
                    return
            super().flush()


def direct_handler(logger: logging.Logger) -> TurnBatchingStreamHandler | None:
    """The one handler a record of ``logger`` at INFO would reach, if it is configure()'s
    own (a batching handler with one of our formatters, no filters on the way); ``None``
    when anything else (a filter, another handler, a test's capture) could see the record."""
    if logger.disabled:
        return None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        handlers = current.handlers
        if handlers:
            if current.parent is not None and current.propagate:
                return None  # handlers here and further up
            if len(handlers) != 1:
                return None
            handler = handlers[0]
            if (
                type(handler) is TurnBatchingStreamHandler
                and not handler.filters
                and handler.level <= logging.INFO
                and isinstance(handler.formatter, LineFormatter)
            ):
                return handler
            return None
        if not current.propagate:
            return None
        current = current.parent
    return None


def info(logger: logging.Logger, message: str, args: tuple[Any, ...], fields: Fields) -> None:
    """``logger.info(message, *args, extra=fields)``, for a line written per request or per
    message: when configure()'s handler alone listens (the usual set-up), the same line is
    formatted and queued without a ``LogRecord`` (a fraction of the cost); anything else
    listening (another handler, a filter, a test's capture) gets a record as usual."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = direct_handler(logger)
    if handler is not None:
        formatter: LineFormatter = handler.formatter  # type: ignore[assignment]
        handler.write_line(formatter.access_line(time.time(), logger.name, message, args, fields))
        return
    logger.info(message, *args, extra=fields, stacklevel=2)


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send the bridge's logs to stderr in the given format."""
    handler = TurnBatchingStreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    # No format here shows thread or process names: don't look them up for every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aio-pika/aiormq log connection noise at INFO; our own link logs what matters.
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    _install_once(logging.getLogger("aiohttp.server"), RefusedRequestFilter())


def redacted_path(request: BaseRequest) -> str:
    """The path with every query value and every path (matrix) parameter replaced by
    ``***``: ``/webhooks/despatched;APIKEY=k`` is logged as ``/webhooks/despatched;***``."""
    path = _PATH_PARAMETERS.sub(";***", request.path)
    if not request.query_string:
        return path
    names = "&".join(f"{name}=***" for name in request.query)
    return f"{path}?{names}"


_PATH_PARAMETERS = re.compile(r";[^/]*")


REFUSED_LOG_INTERVAL = 10.0
"""Seconds between two lines about requests aiohttp's parser refused; those in between are
counted in the next line."""


class RefusedRequestFilter(logging.Filter):
    """On the ``aiohttp.server`` logger: a record of a request its HTTP parser refused (an
    ``HttpProcessingError``, whose text quotes the raw request line or header) becomes one
    WARNING line naming the sender and the kind of error, without the bytes; at most one
    per :data:`REFUSED_LOG_INTERVAL`, the rest counted in the next one."""

    def __init__(self, interval: float = REFUSED_LOG_INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        self._last = -interval
        self._folded = 0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        now = time.monotonic()
        if now - self._last < self.interval:
            self._folded += 1
            return False
        self._last = now
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        record.msg = "refused a request that is not valid HTTP from %s: %s %d%s"
        record.args = (
            remote if isinstance(remote, str) else "an unknown address",
            type(error).__name__,
            error.code,
            f" ({self._folded} more since the last such line)" if self._folded else "",
        )
        self._folded = 0
        if record.levelno > logging.WARNING:  # aiohttp logs some kinds at DEBUG: keep those
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        record.stack_info = None
        return True


def _install_once(logger: logging.Logger, new: logging.Filter) -> None:
    if not any(type(old) is type(new) for old in logger.filters):
        logger.addFilter(new)
