"""Resource quantities (``500m``, ``16Gi``, ``8``) and what a pod asks of a node."""

import re
from collections.abc import Mapping
from typing import Any

GPU = "nvidia.com/gpu"
SCHEDULED_RESOURCES = ("cpu", "memory", GPU)

_SUFFIXES = {
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: str | int | float) -> float:
    """Return the number a quantity stands for (cores for cpu, bytes for memory)."""
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match or match[2] not in _SUFFIXES:
        raise ValueError(f"quantities must match the regular expression: {value!r}")
    return float(match[1]) * _SUFFIXES[match[2]]


def pod_requests(spec: Mapping[str, Any]) -> dict[str, float]:
    """Return what a pod needs of a node: its containers' sum, or its largest init container.

    Requests were defaulted from limits when the pod was created, as the API server does.
    """
    totals = dict.fromkeys(SCHEDULED_RESOURCES, 0.0)
    for container in spec.get("containers") or []:
        for name, amount in _requests(container).items():
            totals[name] += amount
    for container in spec.get("initContainers") or []:
        for name, amount in _requests(container).items():
            totals[name] = max(totals[name], amount)
    return totals


def _requests(container: Mapping[str, Any]) -> dict[str, float]:
    requests = (container.get("resources") or {}).get("requests") or {}
    return {
        name: parse_quantity(requests[name]) for name in SCHEDULED_RESOURCES if name in requests
    }
