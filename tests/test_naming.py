"""SSH names: valid DNS labels, random among free names, safe and cheap at scale."""

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from reservations.models import DomainMapping, LeaseHolder
from reservations.naming import (
    CATALOGUE_SIZE,
    allocate_name,
    catalogue_name,
    clean_requested_name,
    is_valid_dns_label,
    lease_warm_placeholder,
    purge_expired_leases,
)
from tests.factories import pool_of


def lease(name: str, now, *, hours: float = 1, released=None, suffix: int = 1, base=None):
    return DomainMapping(
        name=name,
        base=base or name,
        suffix=suffix,
        from_catalogue=suffix == 1,
        holder=LeaseHolder.WARM,
        expires_at=now + timedelta(hours=hours),
        released_at=released,
    )


def allocate(now, **kwargs):
    return allocate_name(
        holder=LeaseHolder.RESERVATION, expires_at=now + timedelta(hours=1), now=now, **kwargs
    )


def test_catalogue_has_enough_valid_names():
    assert CATALOGUE_SIZE >= 13_000
    names = {catalogue_name(i) for i in range(CATALOGUE_SIZE)}
    assert len(names) == CATALOGUE_SIZE
    assert all(is_valid_dns_label(name) and "_" not in name for name in names)


@pytest.mark.django_db
def test_allocated_name_is_a_free_unsuffixed_dns_label():
    now = timezone.now()
    leased = allocate(now)
    assert is_valid_dns_label(leased.name)
    assert leased.suffix == 1
    assert "-" in leased.name
    assert DomainMapping.objects.live(now).filter(name=leased.name).count() == 1


@pytest.mark.django_db
def test_suffix_only_when_every_catalogue_name_is_taken():
    now = timezone.now()
    every_name = [lease(catalogue_name(i), now) for i in range(CATALOGUE_SIZE)]
    free = every_name.pop(1234)
    DomainMapping.objects.bulk_create(every_name, batch_size=5000)
    assert allocate(now).name == free.name
    suffixed = allocate(now)
    assert suffixed.suffix == 2
    assert suffixed.name == f"{suffixed.base}-2"


@pytest.mark.django_db
def test_released_or_expired_names_are_free_again():
    now = timezone.now()
    released = allocate(now, requested="my-box")
    released.release(now=now)
    assert allocate(now, requested="my-box").name == "my-box"
    DomainMapping.objects.create(
        **{
            "name": "old-box",
            "base": "old-box",
            "holder": LeaseHolder.WARM,
            "expires_at": now - timedelta(minutes=1),
        }
    )
    assert allocate(now, requested="old-box").name == "old-box"
    assert allocate(now, requested="old-box").name == "old-box-2"


@pytest.mark.django_db
def test_placeholder_lease_expires_at_max_age_plus_two_hours(settings):
    settings.WARM_POD_MAX_AGE_HOURS = 12
    now = timezone.now()
    placeholder = lease_warm_placeholder(pool_of("h100"), "gpudev-h100-x1", now=now)
    assert placeholder.holder == LeaseHolder.WARM
    assert placeholder.expires_at == now + timedelta(hours=14)
    assert placeholder.pod_name == "gpudev-h100-x1"


@pytest.mark.django_db
def test_purge_releases_only_expired_leases():
    now = timezone.now()
    DomainMapping.objects.bulk_create(
        [lease("gone-fox", now, hours=-1), lease("live-fox", now, hours=1)]
    )
    assert purge_expired_leases(now=now) == 1
    assert set(DomainMapping.objects.live(now).values_list("name", flat=True)) == {"live-fox"}


@pytest.mark.django_db
def test_allocation_queries_do_not_grow_with_100k_leases():
    now = timezone.now()
    with CaptureQueriesContext(connection) as empty_table:
        allocate(now)
    DomainMapping.objects.bulk_create(
        (
            lease(
                f"{catalogue_name(i % CATALOGUE_SIZE)}-{i // CATALOGUE_SIZE + 2}",
                now,
                suffix=i // CATALOGUE_SIZE + 2,
                base=catalogue_name(i % CATALOGUE_SIZE),
            )
            for i in range(100_000)
        ),
        batch_size=10_000,
    )
    with CaptureQueriesContext(connection) as full_table:
        allocate(now)
    assert len(full_table) == len(empty_table)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_fifty_concurrent_allocations_get_fifty_distinct_names():
    now = timezone.now()
    names, errors = [], []
    start = threading.Barrier(50)

    def allocate_one():
        try:
            start.wait()
            names.append(allocate(now).name)
        except Exception as exc:  # reported below, with the thread's error
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=allocate_one) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(names)) == 50
    assert all(is_valid_dns_label(name) for name in names)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_requests_for_one_name_get_one_each():
    now = timezone.now()
    names = []
    start = threading.Barrier(10)

    def allocate_same():
        start.wait()
        names.append(allocate(now, requested="team-box").name)
        connection.close()

    threads = [threading.Thread(target=allocate_same) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(names) == sorted(["team-box", *[f"team-box-{n}" for n in range(2, 11)]])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("x" * 10_000, "at most"),
        ("Bad_Name!", "lowercase"),
        ("-edge", "lowercase"),
        ("admin", "reserved"),
        ("box-2", "reserved"),
    ],
)
def test_bad_requested_names_are_refused_with_a_reason(raw, message):
    with pytest.raises(ValidationError, match=message):
        clean_requested_name(raw)


@given(st.text(max_size=80))
def test_any_accepted_requested_name_is_a_dns_label(raw):
    try:
        name = clean_requested_name(raw)
    except ValidationError:
        return
    assert is_valid_dns_label(name)
    assert len(name) <= 63
