"""Logging for people (``text``) or machines (``json``, one object per line), and an access
log that never shows a query value (where Mintsoft puts the ``APIKEY``)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and known extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
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


JsonFormatter.converter = time.gmtime


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send the bridge's logs to stderr in the given format."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aio-pika/aiormq log connection noise at INFO; our own link logs what matters.
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)


def redacted_path(request: BaseRequest) -> str:
    """The path with every query value replaced by ``***``."""
    if not request.query_string:
        return request.path
    names = "&".join(f"{name}=***" for name in request.query)
    return f"{request.path}?{names}"


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path (query values redacted), status, latency."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        path = redacted_path(request)
        self.logger.info(
            "%s %s %d %.1fms",
            request.method,
            path,
            response.status,
            time * 1000,
            extra={
                "method": request.method,
                "path": path,
                "status": response.status,
                "latency_ms": round(time * 1000, 2),
                "remote": request.remote,
                "request_id": response.headers.get("X-Request-Id"),
            },
        )
