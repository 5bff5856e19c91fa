"""Log output: one JSON object per line for a log collector, or plain text for a terminal.

A JSON line carries ``time`` (ISO 8601, UTC), ``level``, ``logger`` and ``message``, plus every
field passed with ``extra=`` (``pool``, ``pod``, ``reservation``, ``reason`` …) and the traceback
as ``exc_info``. ``LOG_FORMAT`` picks the format; settings build LOGGING with
:func:`logging_config`.
"""

from datetime import UTC, datetime

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

LOG_FORMATS = ("text", "json")


class JsonFormatter(_JsonFormatter):
    """Format a record as one JSON line: time, level, logger, message and its extra fields."""

    def __init__(self, **kwargs) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            # uvicorn repeats each message with terminal colours as an extra field.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
            **kwargs,
        )

    def formatTime(self, record, datefmt=None) -> str:
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


def logging_config(level: str, log_format: str) -> dict:
    """Return the LOGGING dict: everything to stderr in ``log_format`` at ``level``.

    uvicorn's own loggers are sent through the same handler, so access and error lines come out
    in the same format as the application's.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "json": {"()": JsonFormatter},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
            "kubernetes": {"level": "WARNING"},
            "urllib3": {"level": "WARNING"},
            "botocore": {"level": "WARNING"},
        },
    }
