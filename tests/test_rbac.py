"""The Role grants exactly the (resource, verb) pairs the code in pool/cluster.py calls."""

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_SEAM = ROOT / "pool" / "cluster.py"
RBAC = ROOT / "deploy" / "base" / "rbac.yaml"

_CLIENT_METHOD = re.compile(
    r"^(?P<verb>list|read|create|delete|patch|replace)_(?:namespaced_)?(?P<kind>[a-z_]+?)"
    r"(?:_for_all_namespaces)?$"
)
_VERBS = {"read": "get", "replace": "update"}
_API_GROUPS = {"daemon_set": "apps", "lease": "coordination.k8s.io"}


def _resource(kind: str) -> str:
    return kind.replace("_", "") + "s"


def permissions_used(source: str) -> set[tuple[str, str, str]]:
    """Derive (API group, resource, verb) from every kubernetes client method the code names.

    A method passed to ``_watch`` (not called) is a watch; every other use is the verb in its
    name. ``VersionApi.get_code`` reads /version, which needs no Role.
    """
    used = set()
    watched = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_watch":
            first = node.args[0]
            if isinstance(first, ast.Attribute):
                watched.add(id(first))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        match = _CLIENT_METHOD.match(node.attr)
        if match is None:
            continue
        kind = match["kind"]
        verb = "watch" if id(node) in watched else _VERBS.get(match["verb"], match["verb"])
        used.add((_API_GROUPS.get(kind, ""), _resource(kind), verb))
    return used


def permissions_granted() -> set[tuple[str, str, str]]:
    granted = set()
    for document in yaml.safe_load_all(RBAC.read_text()):
        if document["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in document["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        granted.add((group, resource, verb))
    return granted


def test_the_role_grants_exactly_what_the_code_calls():
    used = permissions_used(CLUSTER_SEAM.read_text())
    granted = permissions_granted()
    assert used - granted == set(), "the code calls these without a grant in deploy/base/rbac.yaml"
    assert granted - used == set(), "the Role grants these but no code calls them"


def test_the_derivation_sees_a_newly_added_call():
    added = CLUSTER_SEAM.read_text() + (
        "\n\ndef relabel_service(name):\n"
        "    _core().patch_namespaced_service(name, _namespace(), {})\n"
    )
    assert permissions_used(added) - permissions_granted() == {("", "services", "patch")}


def test_the_derivation_reads_watches_and_renames_verbs():
    used = permissions_used(CLUSTER_SEAM.read_text())
    assert ("", "pods", "watch") in used
    assert ("apps", "daemonsets", "update") in used
    assert ("coordination.k8s.io", "leases", "get") in used
    assert ("", "nodes", "get") not in used
