"""The patch formats, by table."""

import pytest

from clustersim.errors import ApiError
from clustersim.patch import json_patch, merge_patch, strategic_merge_patch

POD = {
    "metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
    "spec": {
        "containers": [
            {"name": "main", "image": "old", "env": [{"name": "A", "value": "1"}]},
            {"name": "sidecar", "image": "side"},
        ],
        "tolerations": [{"key": "t"}],
    },
}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"metadata": {"labels": {"a": None, "c": "3"}}}, {"b": "2", "c": "3"}),
        ({"metadata": {"labels": None}}, None),
    ],
)
def test_merge_patch_merges_maps_and_deletes_nulls(patch, expected):
    assert merge_patch(POD, patch)["metadata"].get("labels") == expected


def test_merge_patch_replaces_lists_whole():
    patched = merge_patch(POD, {"spec": {"containers": [{"name": "main", "image": "new"}]}})
    assert patched["spec"]["containers"] == [{"name": "main", "image": "new"}]


def test_strategic_merge_patch_merges_containers_by_name():
    patched = strategic_merge_patch(
        POD, {"spec": {"containers": [{"name": "main", "image": "new"}]}}
    )
    assert [(c["name"], c["image"]) for c in patched["spec"]["containers"]] == [
        ("main", "new"),
        ("sidecar", "side"),
    ]
    assert patched["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]


def test_strategic_merge_patch_directives():
    patched = strategic_merge_patch(
        POD,
        {
            "$setElementOrder/containers": [{"name": "main"}],
            "metadata": {"finalizers": ["y"]},
            "spec": {
                "containers": [{"name": "sidecar", "$patch": "delete"}],
                "tolerations": [{"key": "u"}],
            },
        },
    )
    assert [c["name"] for c in patched["spec"]["containers"]] == ["main"]
    assert patched["spec"]["tolerations"] == [{"key": "u"}]
    assert patched["metadata"]["finalizers"] == ["x", "y"]
    assert "$setElementOrder/containers" not in patched


def test_json_patch_operations():
    patched = json_patch(
        POD,
        [
            {"op": "replace", "path": "/spec/containers/0/image", "value": "new"},
            {"op": "add", "path": "/metadata/labels/c~1d", "value": "3"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "copy", "from": "/metadata/labels/b", "path": "/metadata/labels/e"},
            {"op": "move", "from": "/spec/tolerations", "path": "/spec/moved"},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "z"},
        ],
    )
    assert patched["spec"]["containers"][0]["image"] == "new"
    assert patched["metadata"]["labels"] == {"b": "2", "c/d": "3", "e": "2"}
    assert patched["spec"]["moved"] == [{"key": "t"}]
    assert patched["metadata"]["finalizers"] == ["x", "z"]
    assert POD["spec"]["containers"][0]["image"] == "old"


def test_a_failed_json_patch_test_is_invalid():
    with pytest.raises(ApiError) as caught:
        json_patch(POD, [{"op": "test", "path": "/metadata/labels/a", "value": "9"}])
    assert caught.value.code == 422
