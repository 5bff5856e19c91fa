"""Label and field selectors, by table."""

import pytest

from clustersim.errors import ApiError
from clustersim.selectors import (
    labels_match,
    node_selector_term_matches,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"pool": "h100", "state": "ready", "tier": "warm"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("pool=h100", True),
        ("pool==h100", True),
        ("pool!=h100", False),
        ("pool!=b200", True),
        ("missing!=x", True),
        ("state", True),
        ("!state", False),
        ("!missing", True),
        ("pool in (b200, h100)", True),
        ("pool notin (b200,h100)", False),
        ("missing notin (x)", True),
        ("pool=h100, state=claimed", False),
        ("pool in (h100),tier=warm,!missing", True),
        ("", True),
    ],
)
def test_label_selectors(selector, matches):
    assert labels_match(parse_label_selector(selector), LABELS) is matches


@pytest.mark.parametrize("selector", ["pool in h100", "=x", "a=b=c"])
def test_malformed_label_selectors_are_bad_requests(selector):
    with pytest.raises(ApiError) as caught:
        parse_label_selector(selector)
    assert caught.value.code == 400


def test_field_selectors_read_dotted_paths_and_reject_unsupported_fields():
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "h100-1"}, "status": {}}
    supported = frozenset({"metadata.name", "spec.nodeName", "status.phase"})
    (requirement,) = parse_field_selector("spec.nodeName=h100-1", supported)
    assert requirement.matches(pod)
    (requirement,) = parse_field_selector("status.phase!=Running", supported)
    assert requirement.matches(pod)
    with pytest.raises(ApiError):
        parse_field_selector("spec.hostname=x", supported)


def test_node_selector_terms_match_labels_and_the_node_name():
    node = {"metadata": {"name": "h100-1", "labels": {"gpudev.io/gpu-type": "h100", "gpus": "8"}}}

    def term(key, operator, *values, fields=False):
        expression = {"key": key, "operator": operator, "values": list(values)}
        return {"matchFields" if fields else "matchExpressions": [expression]}

    assert node_selector_term_matches(term("gpudev.io/gpu-type", "In", "h100", "h200"), node)
    assert not node_selector_term_matches(term("gpudev.io/gpu-type", "NotIn", "h100"), node)
    assert node_selector_term_matches(term("gpus", "Gt", "4"), node)
    assert not node_selector_term_matches(term("gpus", "Lt", "4"), node)
    assert node_selector_term_matches(term("metadata.name", "In", "h100-1", fields=True), node)
