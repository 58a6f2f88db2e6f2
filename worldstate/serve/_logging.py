"""Structured logs for the long-running commands (``serve``, ``coordinator``): stdlib
logging, one JSON object per line (``--log-format json``) or a readable console line, every
record bound to the process's server id. Records may carry ``region``, ``epoch`` and
``op_id`` (``log.info(..., extra={"region": str(key), "epoch": 3})``); the JSON formatter
emits them as fields."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

FORMATS = ("json", "console")
BOUND_FIELDS = ("region", "epoch", "op_id", "coordinator_epoch", "event")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "server_id"}


class ServerIdFilter(logging.Filter):
    """Stamps every record with the process's server id (unless it carries its own)."""

    def __init__(self, server_id: str) -> None:
        super().__init__()
        self.server_id = server_id

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "server_id"):
            record.server_id = self.server_id
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "server_id", "msg", [region, epoch, op_id, ...], [exc]}``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "server_id": getattr(record, "server_id", None),
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                doc[k] = v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(server_id)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = [f"{k}={getattr(record, k)}" for k in BOUND_FIELDS if hasattr(record, k)]
        return line + (" [" + " ".join(extra) + "]" if extra else "")


def configure_logging(fmt: str, *, server_id: str, level: int = logging.INFO) -> None:
    """Replace the root handlers with one stderr handler in ``fmt`` (json or console)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(ServerIdFilter(server_id))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
