"""The probes the kubelet calls: /healthz (the process answers) and /readyz (its dependencies do).

/readyz runs against the real PostgreSQL and Redis of the test settings and a clustersim API
server; a dependency is taken down by pointing at a closed port or stopping the sim.
"""

import socket
import time
from collections.abc import Iterator

import pytest
from django.db import connection


def closed_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Return a loopback port that takes connections and never answers on them."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.fixture
def cluster(clustersim, settings):
    """Point the site at a running clustersim API server."""
    settings.KUBECONFIG = clustersim.kubeconfig_path
    return clustersim


def test_healthz_says_ok_without_touching_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok"


@pytest.mark.redis
@pytest.mark.django_db
def test_readyz_is_ok_when_database_redis_and_kubernetes_answer(client, cluster):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok", "kubernetes": "ok"},
    }


@pytest.mark.postgres
@pytest.mark.django_db
def test_readyz_names_the_database_when_postgres_is_down(client, cluster, monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
    monkeypatch.setitem(connection.settings_dict, "PORT", closed_port())
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["database"]
    assert "OperationalError" in body["checks"]["database"]
    assert body["checks"]["kubernetes"] == "ok"


@pytest.mark.django_db
def test_readyz_names_redis_when_redis_is_down(client, cluster, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["redis"]
    assert "ConnectionError" in body["checks"]["redis"]
    assert body["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_readyz_names_kubernetes_when_the_api_server_stops(client, cluster):
    assert client.get("/readyz").json()["checks"]["kubernetes"] == "ok"
    cluster.stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["kubernetes"]
    assert "ClusterUnavailable" in body["checks"]["kubernetes"]


@pytest.mark.django_db
def test_readyz_fails_within_the_probe_timeout_when_redis_hangs(
    client, cluster, settings, silent_port
):
    settings.REDIS_URL = f"redis://127.0.0.1:{silent_port}/0"
    started = time.monotonic()
    response = client.get("/readyz")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["failing"] == ["redis"]
    # deploy/base/web.yaml gives the readiness probe 5 s.
    assert elapsed < 4


@pytest.mark.django_db
def test_probes_are_served_over_plain_http_without_a_login(client, cluster, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/login/").status_code == 301
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "ok"
