"""The site a newcomer opens: sign-in, the admin with seeded GPU types and pools."""

import pytest

from pool.models import GpuType, Pool

pytestmark = pytest.mark.django_db


def test_seeded_gpu_types_each_have_a_default_pool_at_target_zero():
    expected = {"t4", "l4", "a10g", "a100", "h100", "h200", "b200", "cpu-x86", "cpu-arm"}
    assert expected <= set(GpuType.objects.values_list("name", flat=True))
    assert GpuType.objects.get(name="h100").gpus_per_node == 8
    assert GpuType.objects.get(name="a10g").gpus_per_node == 4
    assert GpuType.objects.get(name="h100-mig-1g").is_mig
    for gpu_type in GpuType.objects.all():
        pool = Pool.objects.get(gpu_type=gpu_type, profile="default")
        assert pool.target == 0


def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    assert b"Sign in" in client.get("/login/").content


def test_wrong_password_is_refused_with_a_message(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"do not match" in response.content


def test_operator_sees_seeded_gpu_types_in_the_admin(client, olga):
    olga.is_superuser = True
    olga.save()
    client.force_login(olga)
    page = client.get("/admin/pool/gputype/")
    assert page.status_code == 200
    assert b"h100-mig-1g" in page.content
    assert b"cpu-arm" in page.content


def test_developer_cannot_open_the_admin(client, alice):
    client.force_login(alice)
    assert client.get("/admin/pool/pool/").status_code == 302


def test_login_needs_csrf(alice):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/login/", {"username": "alice", "password": "alice-gpudev"})
    assert response.status_code == 403
