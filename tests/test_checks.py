"""Start-up refuses timeouts that do not outlast what they wait for (PR #671)."""

import pytest
from django.core import checks


def timeout_errors() -> set[str]:
    return {message.id for message in checks.run_checks() if message.id.startswith("gpudev.")}


def test_defaults_pass():
    assert timeout_errors() == set()


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"WARM_SPAWN_TIMEOUT": 30, "POD_READY_TIMEOUT": 300}, "gpudev.E001"),
        ({"WARM_SPAWN_TIMEOUT": 300, "POD_READY_TIMEOUT": 300}, "gpudev.E001"),
        ({"STUCK_SPAWN_CUTOFF": 120}, "gpudev.E002"),
        ({"SPAWN_TASK_TIME_LIMIT": 60}, "gpudev.E003"),
        ({"KUBERNETES_REQUEST_TIMEOUT": 30}, "gpudev.E004"),
        ({"RECONCILE_INTERVAL": 10, "RECONCILE_TASK_TIME_LIMIT": 12}, "gpudev.E005"),
    ],
)
def test_inverted_timeouts_fail_start_up(settings, overrides, error):
    for name, value in overrides.items():
        setattr(settings, name, value)
    assert error in timeout_errors()


def test_a_beat_entry_that_outlives_its_period_fails(settings):
    settings.CELERY_BEAT_SCHEDULE = {
        "slow": {"task": "x", "schedule": 30, "options": {"expires": 45}},
    }
    assert "gpudev.E006" in timeout_errors()
