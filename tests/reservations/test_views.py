"""The reserve page: a valid request is served, a bad one explained, someone else's id a 404."""

import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from pool.models import AuditEvent, PodRecord
from reservations.models import DomainMapping, Reservation, ReservationStatus
from tests.factories import pod_record, pool_of, reservation_for
from tests.reservations.conftest import ready_nodes

pytestmark = pytest.mark.django_db

GOOD = {"gpu_type": "h100", "gpu_count": "1", "profile": "default", "duration": "120", "name": ""}


def counts() -> dict[str, int]:
    return {
        "reservations": Reservation.objects.count(),
        "pods": PodRecord.objects.count(),
        "leases": DomainMapping.objects.count(),
        "audit": AuditEvent.objects.count(),
    }


@pytest.fixture
def alice_client(client, keyed_alice, release):
    ready_nodes("h100", 1)
    client.force_login(keyed_alice)
    return client


def test_reserving_redirects_to_the_new_reservation_card(alice_client, keyed_alice):
    response = alice_client.post("/reserve/", GOOD)
    reservation = Reservation.objects.get(user=keyed_alice)
    assert response.status_code == 302
    assert response["Location"] == f"/#reservation-{reservation.pk}"
    page = alice_client.get("/").content.decode()
    assert f'id="reservation-{reservation.pk}"' in page
    assert "Starting a new dev server" in page


def test_page_shows_capacity_per_gpu_type(alice_client):
    pod_record(pool_of("h100", target=1), "gpudev-h100-default-aaaaaa")
    page = alice_client.get("/").content.decode()
    assert "Capacity now" in page
    assert "seconds (warm pod ready)" in page


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("gpu_type", "x100", "Unknown GPU type"),
        ("gpu_count", "3", "h100 reservations take 1 or 2 or 4 or 8 GPUs"),
        ("gpu_count", "many", "h100 reservations take"),
        ("profile", "huge", "h100 has no such profile"),
        ("duration", "0", "Reservations last from 5 min to 24 h"),
        ("duration", str(100 * 60), "Reservations last from 5 min to 24 h"),
        ("duration", "", "This field is required"),
        ("name", "x" * 10_240, "Names are at most 63 characters"),
        ("name", "Bad_Name!", "Use lowercase letters, digits and hyphens"),
        ("name", "admin", "is reserved"),
    ],
)
def test_bad_request_is_explained_and_changes_nothing(alice_client, field, value, message):
    before = counts()
    response = alice_client.post("/reserve/", {**GOOD, field: value})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert counts() == before


def test_cpu_type_takes_zero_gpus(alice_client):
    ready_nodes("cpu-x86", 1)
    response = alice_client.post("/reserve/", {**GOOD, "gpu_type": "cpu-x86", "gpu_count": "0"})
    assert response.status_code == 302
    assert Reservation.objects.get().gpu_count == 0


def test_mig_slices_are_their_own_type(alice_client):
    page = alice_client.get("/reserve/form/?gpu_type=h100-mig-1g").content.decode()
    assert '<option value="16">16</option>' in page


def test_any_whole_number_of_minutes_within_limits_is_accepted(alice_client):
    assert alice_client.post("/reserve/", {**GOOD, "duration": "95"}).status_code == 302
    assert Reservation.objects.get().duration == timedelta(minutes=95)


def test_user_without_ssh_keys_is_told_to_add_one(client, alice, release):
    client.force_login(alice)
    response = client.post("/reserve/", GOOD)
    assert response.status_code == 400
    assert "Add an SSH public key to your profile first" in response.content.decode()
    assert not Reservation.objects.exists()


def test_reserve_needs_csrf_and_sign_in(keyed_alice, release):
    assert Client().post("/reserve/", GOOD).status_code == 302
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(keyed_alice)
    assert strict.post("/reserve/", GOOD).status_code == 403
    assert not Reservation.objects.exists()


def test_users_see_only_their_own_reservations(alice_client, keyed_bob):
    bobs = reservation_for(keyed_bob, pool_of("h100"))
    assert str(bobs.pk) not in alice_client.get("/").content.decode()


@pytest.mark.parametrize("action", ["extend", "cancel"])
def test_someone_elses_reservation_is_a_404_and_unchanged(alice_client, keyed_bob, action):
    now = timezone.now()
    bobs = reservation_for(keyed_bob, pool_of("h100"))
    bobs.activate(now=now, pod_name="p", warm=False)
    before = counts()
    response = alice_client.post(f"/reservations/{bobs.pk}/{action}/", {"minutes": "60"})
    assert response.status_code == 404
    assert alice_client.post(f"/reservations/{uuid.uuid4()}/{action}/").status_code == 404
    bobs.refresh_from_db()
    assert (bobs.status, bobs.expires_at) == (ReservationStatus.ACTIVE, now + bobs.duration)
    assert counts() == before


def test_extend_over_htmx_answers_with_the_updated_card(alice_client, keyed_alice):
    now = timezone.now()
    reservation = reservation_for(keyed_alice, pool_of("h100"), hours=2)
    reservation.activate(now=now, pod_name="p", warm=False)
    response = alice_client.post(
        f"/reservations/{reservation.pk}/extend/", {"minutes": "60"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    card = response.content.decode().lstrip()
    assert card.startswith(f'<article id="reservation-{reservation.pk}"')
    reservation.refresh_from_db()
    assert reservation.expires_at == now + timedelta(hours=3)


def test_refused_extension_shows_why_in_the_card(alice_client, keyed_alice):
    reservation = reservation_for(keyed_alice, pool_of("h100"), hours=24)
    reservation.activate(now=timezone.now(), pod_name="p", warm=False)
    alice_client.post(f"/reservations/{reservation.pk}/extend/", {"minutes": "1440"})
    before = counts()
    response = alice_client.post(
        f"/reservations/{reservation.pk}/extend/", {"minutes": "1440"}, HTTP_HX_REQUEST="true"
    )
    assert "at most 48 hours in all" in response.content.decode()
    response = alice_client.post(f"/reservations/{reservation.pk}/extend/", {"minutes": "7"})
    assert response.status_code == 302
    assert "Choose how long to extend by" in alice_client.get("/").content.decode()
    assert counts() == before


def test_cancel_ends_the_reservation(alice_client, keyed_alice):
    alice_client.post("/reserve/", GOOD)
    reservation = Reservation.objects.get()
    response = alice_client.post(f"/reservations/{reservation.pk}/cancel/", follow=True)
    assert response.status_code == 200
    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.CANCELLED
    assert not DomainMapping.objects.live(timezone.now()).exists()
