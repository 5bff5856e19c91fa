"""Settings from the environment: strict, with secrets from mounted files."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from gpudev_site.env import env_bool, env_float, env_int, env_list, env_secret


@pytest.mark.parametrize(
    ("reader", "value"),
    [(env_bool, "maybe"), (env_int, "12h"), (env_float, "fast")],
)
def test_malformed_values_name_the_variable(monkeypatch, reader, value):
    monkeypatch.setenv("GPUDEV_SETTING", value)
    with pytest.raises(ImproperlyConfigured, match="GPUDEV_SETTING"):
        reader("GPUDEV_SETTING", 1)


def test_minimum_is_enforced(monkeypatch):
    monkeypatch.setenv("GPUDEV_SETTING", "-5")
    with pytest.raises(ImproperlyConfigured, match="minimum"):
        env_int("GPUDEV_SETTING", 1, minimum=0)


def test_unset_or_blank_gives_the_default(monkeypatch):
    monkeypatch.setenv("GPUDEV_SETTING", "  ")
    assert env_float("GPUDEV_SETTING", 2.5) == 2.5
    assert env_list("GPUDEV_SETTING", ["a"]) == ["a"]


def test_secret_comes_from_its_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("GPUDEV_TOKEN_FILE", str(secret))
    assert env_secret("GPUDEV_TOKEN") == "s3cret"
    monkeypatch.setenv("GPUDEV_TOKEN", "other")
    with pytest.raises(ImproperlyConfigured, match="not both"):
        env_secret("GPUDEV_TOKEN")


def test_unreadable_secret_file_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUDEV_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        env_secret("GPUDEV_TOKEN")
