"""SSH names: ``adjective-animal`` leases, allocated at random among free names.

A name is taken while its lease is unreleased and unexpired. The partial unique index on
unreleased names makes concurrent allocations safe: the loser of a race gets an IntegrityError
and tries the next candidate. Allocation runs a constant number of queries however many leases
exist (PR #199 saw a picker slowed and pushed to ``-2`` suffixes by a pile of 449 stale leases):

1. Ask which of a random sample of catalogue names are taken; take a free one.
2. Only if the whole sample was taken, count the live catalogue leases (at most the catalogue's
   size); if some catalogue name is still free, list the taken ones and pick among the rest.
3. Only if every catalogue name is taken, add ``-2``, ``-3`` … to a random base name.
"""

import random
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from reservations.models import DomainMapping, LeaseHolder, Reservation
from reservations.words import ADJECTIVES, ANIMALS

CATALOGUE_SIZE = len(ADJECTIVES) * len(ANIMALS)
SAMPLE_SIZE = 64
SUFFIX_SAMPLE = 8
MAX_NAME_LENGTH = 63
RESERVED_NAMES = frozenset(
    {"www", "api", "admin", "root", "mail", "ftp", "ssh", "ns", "localhost", "dashboard", "warm"}
)
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SUFFIXED = re.compile(r"^(?P<base>.+)-(?P<suffix>[0-9]+)$")

_random = random.SystemRandom()


def catalogue_name(index: int) -> str:
    """Return the catalogue's ``index``-th name (0 ≤ index < CATALOGUE_SIZE)."""
    adjective, animal = divmod(index, len(ANIMALS))
    return f"{ADJECTIVES[adjective]}-{ANIMALS[animal]}"


_CATALOGUE_INDEX = {catalogue_name(i): i for i in range(CATALOGUE_SIZE)}


def is_valid_dns_label(name: str) -> bool:
    return bool(_DNS_LABEL.match(name))


def clean_requested_name(raw: str) -> str:
    """Return a user's requested name as a DNS label, or raise ValidationError saying why."""
    if len(raw) > MAX_NAME_LENGTH * 2:
        raise ValidationError(f"Names are at most {MAX_NAME_LENGTH} characters.")
    name = raw.strip().lower().replace("_", "-")
    if not name:
        raise ValidationError("The name is empty.")
    if len(name) > MAX_NAME_LENGTH - 4:
        raise ValidationError(f"Names are at most {MAX_NAME_LENGTH - 4} characters.")
    if not is_valid_dns_label(name):
        raise ValidationError(
            "Use lowercase letters, digits and hyphens, starting and ending with a letter or digit."
        )
    if name in RESERVED_NAMES or _SUFFIXED.match(name):
        raise ValidationError(f"{name!r} is reserved; choose another name.")
    return name


def placeholder_expiry(pool, now: datetime) -> datetime:
    """When a warm pod's placeholder lease lapses: the pool's max age plus a margin."""
    margin = timedelta(hours=settings.PLACEHOLDER_LEASE_MARGIN_HOURS)
    return now + pool.max_age() + margin


def allocate_name(
    *,
    holder: str,
    expires_at: datetime,
    now: datetime,
    pod_name: str = "",
    reservation: Reservation | None = None,
    requested: str = "",
) -> DomainMapping:
    """Lease a free name to a warm pod or a reservation and return the lease.

    With ``requested`` (already cleaned), that name is used, or ``requested-2`` … when it is
    taken. Otherwise a random free catalogue name is used, suffixed only when every catalogue
    name is taken.
    """
    lease = {"holder": holder, "expires_at": expires_at, "pod_name": pod_name}
    lease["reservation"] = reservation
    if requested:
        return _lease_with_suffix(requested, now=now, **lease)
    for candidate in _free_catalogue_names(now):
        taken = _try_lease(candidate, base=candidate, suffix=1, now=now, **lease)
        if taken is not None:
            return taken
    return _lease_with_suffix(catalogue_name(_random.randrange(CATALOGUE_SIZE)), now=now, **lease)


def _free_catalogue_names(now: datetime) -> list[str]:
    """Return free catalogue names in random order, by the steps in the module docstring."""
    sample = [catalogue_name(i) for i in _random.sample(range(CATALOGUE_SIZE), SAMPLE_SIZE)]
    taken = set(
        DomainMapping.objects.live(now).filter(name__in=sample).values_list("name", flat=True)
    )
    free = [name for name in sample if name not in taken]
    if free:
        return free
    live_catalogue = DomainMapping.objects.live(now).filter(from_catalogue=True, suffix=1)
    if live_catalogue.count() >= CATALOGUE_SIZE:
        return []
    taken = set(live_catalogue.values_list("name", flat=True))
    free = [name for name in _CATALOGUE_INDEX if name not in taken]
    _random.shuffle(free)
    return free[:SAMPLE_SIZE]


def _lease_with_suffix(base: str, *, now: datetime, **lease) -> DomainMapping:
    """Lease ``base`` if free, else the first free of ``base-2`` …, sampled then by maximum."""
    candidates = [(base, 1)] + [(f"{base}-{n}", n) for n in range(2, SUFFIX_SAMPLE + 2)]
    taken = set(
        DomainMapping.objects.live(now)
        .filter(name__in=[name for name, _ in candidates])
        .values_list("name", flat=True)
    )
    for name, suffix in candidates:
        if name not in taken:
            leased = _try_lease(name, base=base, suffix=suffix, now=now, **lease)
            if leased is not None:
                return leased
    highest = (
        DomainMapping.objects.live(now)
        .filter(base=base)
        .order_by("-suffix")
        .values_list("suffix", flat=True)
        .first()
    )
    for suffix in range((highest or 1) + 1, (highest or 1) + 1 + SUFFIX_SAMPLE):
        leased = _try_lease(f"{base}-{suffix}", base=base, suffix=suffix, now=now, **lease)
        if leased is not None:
            return leased
    raise IntegrityError(f"Could not lease a name based on {base!r}; try again.")


def _try_lease(
    name: str, *, base: str, suffix: int, now: datetime, **lease
) -> DomainMapping | None:
    """Insert a lease on ``name`` unless a live lease holds it; return None if one does.

    The insert comes first, as it nearly always succeeds; only when the unique index refuses
    it is a holder that has expired but was never released looked for, released, and the
    insert tried once more.
    """
    for attempt in range(2):
        try:
            with transaction.atomic():
                return DomainMapping.objects.create(
                    name=name,
                    base=base,
                    suffix=suffix,
                    from_catalogue=base in _CATALOGUE_INDEX,
                    created_at=now,
                    **lease,
                )
        except IntegrityError:
            lapsed = DomainMapping.objects.lapsed(now).filter(name=name)
            if attempt or not lapsed.update(released_at=now):
                return None
    return None


def lease_warm_placeholder(pool, pod_name: str, *, now: datetime) -> DomainMapping:
    """Lease a name for a warm pod, expiring at the pool's max age plus the margin."""
    return allocate_name(
        holder=LeaseHolder.WARM,
        expires_at=placeholder_expiry(pool, now),
        now=now,
        pod_name=pod_name,
    )


def purge_expired_leases(*, now: datetime) -> int:
    """Release every lease that has expired; return how many."""
    return DomainMapping.objects.lapsed(now).update(released_at=now)
