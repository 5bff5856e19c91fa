"""Label and field selectors, in the query-string form and the structured form of specs."""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clustersim.errors import bad_request

# One requirement of a label selector: `key`, `!key`, `key=v`, `key==v`, `key!=v`,
# `key in (a,b)`, `key notin (a,b)`.
_REQUIREMENT = re.compile(
    r"""\s*(?:
        (?P<not>!)\s*(?P<absent>[^\s,=!()]+)
      | (?P<setkey>[^\s,=!()]+)\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\)
      | (?P<key>[^\s,=!()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,=!()]*))?
    )\s*(?:,|$)""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Requirement:
    """One condition on a label: an operator over a key and a set of values."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Say whether ``labels`` satisfy this requirement."""
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # NotIn: a missing key matches


LabelSelector = tuple[Requirement, ...]


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ``labelSelector`` from a query string; raise a 400 on bad syntax."""
    requirements: list[Requirement] = []
    text = (text or "").strip()
    position = 0
    while position < len(text):
        match = _REQUIREMENT.match(text, position)
        if not match or match.end() == position:
            raise bad_request(f"unable to parse requirement: {text[position:]!r}")
        position = match.end()
        if match["absent"]:
            requirements.append(Requirement(match["absent"], "DoesNotExist"))
        elif match["setkey"]:
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            operator = "In" if match["setop"] == "in" else "NotIn"
            requirements.append(Requirement(match["setkey"], operator, values))
        elif match["op"] is None:
            requirements.append(Requirement(match["key"], "Exists"))
        else:
            operator = "NotIn" if match["op"] == "!=" else "In"
            requirements.append(Requirement(match["key"], operator, frozenset([match["value"]])))
    return tuple(requirements)


def labels_match(selector: LabelSelector, labels: Mapping[str, str] | None) -> bool:
    """Say whether ``labels`` satisfy every requirement of ``selector``."""
    labels = labels or {}
    return all(requirement.matches(labels) for requirement in selector)


def node_selector_term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Say whether a node matches one ``nodeSelectorTerm`` (its expressions are ANDed)."""
    labels = node["metadata"].get("labels") or {}
    for expression in term.get("matchExpressions") or []:
        if not _node_expression_matches(expression, labels.get(expression["key"])):
            return False
    for expression in term.get("matchFields") or []:
        if expression["key"] != "metadata.name":
            return False
        if not _node_expression_matches(expression, node["metadata"]["name"]):
            return False
    return True


def _node_expression_matches(expression: Mapping[str, Any], value: str | None) -> bool:
    operator = expression["operator"]
    values = expression.get("values") or []
    if operator == "In":
        return value in values
    if operator == "NotIn":
        return value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if value is None or not values:
        return False
    if operator == "Gt":
        return int(value) > int(values[0])
    if operator == "Lt":
        return int(value) < int(values[0])
    return False


@dataclass(frozen=True)
class FieldRequirement:
    """One ``field=value`` or ``field!=value`` condition of a field selector."""

    path: str
    value: str
    negate: bool

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Say whether ``obj`` satisfies this condition (a missing field reads as "")."""
        return (field_value(obj, self.path) == self.value) != self.negate


FieldSelector = tuple[FieldRequirement, ...]


def parse_field_selector(text: str | None, supported: frozenset[str]) -> FieldSelector:
    """Parse ``fieldSelector``; fields outside ``supported`` are a 400, as on a real server."""
    requirements = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        match = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", part)
        if not match:
            raise bad_request(f"invalid selector: {part!r}")
        path, operator, value = match.groups()
        if path not in supported:
            raise bad_request(f'field label not supported: "{path}"')
        requirements.append(FieldRequirement(path, value, operator == "!="))
    return tuple(requirements)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """Read a dotted path such as ``spec.nodeName`` from an object, as a string."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    return str(value)


def object_filter(
    labels: LabelSelector, fields: FieldSelector
) -> Callable[[Mapping[str, Any]], bool]:
    """Return a predicate for objects matching both selectors."""

    def matches(obj: Mapping[str, Any]) -> bool:
        return labels_match(labels, obj["metadata"].get("labels")) and all(
            requirement.matches(obj) for requirement in fields
        )

    return matches
