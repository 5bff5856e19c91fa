"""Log lines as a log collector reads them (LOG_FORMAT=json)."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from gpudev_site.logging import JsonFormatter


def test_a_record_with_extra_fields_is_one_json_line_with_those_fields():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gpudev.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "recycled %s",
            "h100-warm-7",
            extra={"pool": "h100/default", "pod": "h100-warm-7", "reason": "stale image"},
        )
        logger.info("claimed", extra={"reservation": "3f2a"})
    finally:
        logger.removeHandler(handler)

    first, second = stream.getvalue().splitlines()
    record = json.loads(first)
    assert record.pop("time").endswith("+00:00")
    assert record == {
        "level": "WARNING",
        "logger": "gpudev.test.json",
        "message": "recycled h100-warm-7",
        "pool": "h100/default",
        "pod": "h100-warm-7",
        "reason": "stale image",
    }
    assert json.loads(second)["reservation"] == "3f2a"


def test_a_traceback_stays_inside_its_json_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gpudev.test.traceback")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise RuntimeError("API server gone")
        except RuntimeError:
            logger.exception("reconcile failed", extra={"pool": "a100/default"})
    finally:
        logger.removeHandler(handler)

    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["pool"] == "a100/default"
    assert "RuntimeError: API server gone" in record["exc_info"]


def test_a_misspelt_log_format_stops_start_up_naming_the_variable(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import gpudev_site.settings"],
        cwd=Path(__file__).resolve().parent.parent,
        env={"PATH": os.environ["PATH"], "LOG_FORMAT": "jsn", "GPUDEV_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "LOG_FORMAT='jsn' must be text or json." in result.stderr
