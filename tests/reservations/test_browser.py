"""What a developer sees in Chromium: sign in, add a key, reserve, watch it turn active without
reloading, copy the SSH command, extend, cancel."""

from datetime import timedelta

import pytest
from django.utils import timezone

from pool.models import PodRecord, PodState
from reservations.claims import ReservationRequest, reserve
from reservations.models import Reservation, ReservationStatus, SshKey
from tests.factories import pool_of
from tests.live import ARTIFACTS, sign_in, wait_for
from tests.reservations.conftest import ED25519, ED25519_FINGERPRINT

pytestmark = [pytest.mark.browser, pytest.mark.postgres]


WS_OPEN = "document.addEventListener('htmx:wsOpen', () => { window.wsOpen = true; });"


def snapshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"reservations-{name}.png"), full_page=True)


def test_developer_reserves_watches_it_start_copies_extends_and_cancels(
    engine, live_server_url, page, alice
):
    engine.start_watcher()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server_url)
    page.add_init_script(WS_OPEN)

    page.goto(f"{live_server_url}/login/")
    snapshot(page, "1-sign-in")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-gpudev")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Reserve a dev server")
    assert page.is_visible("text=You have no SSH key yet")

    page.click("nav >> text=SSH keys")
    page.fill("#id_public_key", "ssh-ed25519 AAAA-not-a-key")
    page.click("text=Add key")
    assert page.is_visible("text=not valid base64")
    page.fill("#id_public_key", ED25519)
    page.click("text=Add key")
    page.wait_for_selector(f"text={ED25519_FINGERPRINT}")
    snapshot(page, "2-ssh-keys")

    page.click("nav >> text=Reserve")
    page.wait_for_function("window.wsOpen === true")
    page.select_option("#id_gpu_type", "cpu-x86")
    page.wait_for_selector("#id_gpu_count option[value='0']", state="attached")
    page.select_option("#id_gpu_type", "h100")
    page.wait_for_selector("#id_gpu_count option[value='8']", state="attached")
    page.select_option("#id_gpu_count", "2")
    page.select_option("#id_duration", "60")
    page.fill("#id_name", "alice-box")
    page.click("button:has-text('Reserve')")
    page.wait_for_selector("text=Starting a new dev server")
    reservation = Reservation.objects.get(user=alice)
    card = f"#reservation-{reservation.pk}"
    assert page.inner_text(f"{card} .badge") == "Starting"
    snapshot(page, "3-starting")

    page.wait_for_function("window.wsOpen === true")
    page.evaluate("window.notReloaded = true")
    wait_for(
        lambda: PodRecord.objects.filter(reservation=reservation, state=PodState.PENDING).exists(),
        what="the cold pod to be created",
    )
    engine.sim.advance_until(
        lambda: Reservation.objects.get(pk=reservation.pk).status == ReservationStatus.ACTIVE,
        max_seconds=300,
    )
    page.wait_for_selector(f"{card} .badge.green", timeout=10_000)
    assert page.evaluate("window.notReloaded") is True, "the card updated without a reload"
    command = page.inner_text(f"{card} .ssh-command")
    assert command == "ssh alice-box.devservers.localhost"
    snapshot(page, "4-active")

    page.click(f"{card} button.copy")
    page.wait_for_selector(f"{card} button.copy.copied")
    assert page.evaluate("navigator.clipboard.readText()") == command

    reservation.refresh_from_db()
    expires_at = reservation.expires_at
    shown_expiry = page.inner_text(f"{card} .expires")
    page.select_option(f"#extend-{reservation.pk}", "60")
    page.click(f"{card} button:has-text('Extend')")
    wait_for(lambda: Reservation.objects.get(pk=reservation.pk).expires_at != expires_at)
    reservation.refresh_from_db()
    assert reservation.expires_at == expires_at + timedelta(hours=1)
    page.wait_for_function(
        f"document.querySelector('{card} .expires').innerText !== {shown_expiry!r}"
    )
    snapshot(page, "5-extended")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"{card} button:has-text('Cancel')")
    page.wait_for_selector(f"{card} .badge:has-text('Cancelled')")
    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.CANCELLED
    assert reservation.ended_at <= timezone.now()
    snapshot(page, "6-cancelled")


def test_a_reservation_made_in_another_tab_appears_without_a_reload(
    engine, live_server_url, page, alice
):
    SshKey.objects.create(user=alice, public_key=ED25519, fingerprint=ED25519_FINGERPRINT)
    page.add_init_script(WS_OPEN)
    sign_in(page, live_server_url, alice)
    page.goto(f"{live_server_url}/")
    page.wait_for_function("window.wsOpen === true")
    assert page.is_visible("text=No reservations yet")

    request = ReservationRequest(pool=pool_of("a10g"), gpu_count=1, duration=timedelta(hours=1))
    reservation = reserve(alice, request, now=timezone.now())

    page.wait_for_selector(f"#reservation-{reservation.pk}")
    assert not page.is_visible("text=No reservations yet")
