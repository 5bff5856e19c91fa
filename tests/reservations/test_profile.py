"""The profile page: users add, list and delete their own SSH keys, and nobody else's."""

import pytest
from django.test import Client

from reservations.models import SshKey
from tests.reservations.conftest import ECDSA, ED25519, ED25519_FINGERPRINT, add_key

pytestmark = pytest.mark.django_db


def test_added_key_is_listed_with_its_fingerprint(client, alice):
    client.force_login(alice)
    response = client.post("/profile/keys/", {"public_key": ED25519, "title": ""}, follow=True)
    assert response.status_code == 200
    key = SshKey.objects.get(user=alice)
    assert key.fingerprint == ED25519_FINGERPRINT
    assert key.title == "me@host x"
    assert key.public_key == ED25519
    page = response.content.decode()
    assert ED25519_FINGERPRINT in page
    assert "Added me@host x" in page


def test_bad_key_is_refused_with_a_clear_message_and_nothing_saved(client, alice):
    client.force_login(alice)
    response = client.post("/profile/keys/", {"public_key": "ssh-ed25519 AAAA!!!! me"})
    assert response.status_code == 400
    assert "not valid base64" in response.content.decode()
    assert not SshKey.objects.exists()


def test_duplicate_key_is_refused(client, alice):
    add_key(alice)
    client.force_login(alice)
    response = client.post("/profile/keys/", {"public_key": f"  {ED25519} "})
    assert response.status_code == 400
    assert "You already added this key" in response.content.decode()
    assert SshKey.objects.filter(user=alice).count() == 1


def test_the_same_key_may_belong_to_two_users(client, alice, bob):
    add_key(bob)
    client.force_login(alice)
    client.post("/profile/keys/", {"public_key": ED25519})
    assert SshKey.objects.filter(fingerprint=ED25519_FINGERPRINT).count() == 2


def test_user_deletes_own_key(client, alice):
    key = add_key(alice)
    client.force_login(alice)
    response = client.post(f"/profile/keys/{key.pk}/delete/")
    assert response.status_code == 302
    assert not SshKey.objects.exists()


def test_user_cannot_see_or_delete_someone_elses_key(client, alice, bob):
    bobs = add_key(bob, ECDSA)
    client.force_login(alice)
    assert bobs.fingerprint not in client.get("/profile/").content.decode()
    assert client.post(f"/profile/keys/{bobs.pk}/delete/").status_code == 404
    assert SshKey.objects.filter(pk=bobs.pk).exists()


def test_key_changes_need_csrf_and_a_signed_in_user(alice):
    key = add_key(alice)
    anonymous = Client()
    assert anonymous.post("/profile/keys/", {"public_key": ECDSA}).status_code == 302
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post("/profile/keys/", {"public_key": ECDSA}).status_code == 403
    assert strict.post(f"/profile/keys/{key.pk}/delete/").status_code == 403
    assert SshKey.objects.filter(user=alice).count() == 1
