"""Just enough PromQL lexing for the stack tests: the metric names an expression selects."""

import re

KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression or a Grafana label_values() query."""
    match = _LABEL_VALUES.match(expr)
    if match:
        expr = match.group(1)
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for ident, call in _IDENT.findall(text):
        if call or ident.lower() in KEYWORDS:
            continue
        names.add(ident)
    return names


_BY_LABELS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def label_names(expr: str) -> set[str]:
    """Label names an expression groups by or matches on (in by(), on(), {...} matchers)."""
    text = _STRING.sub('""', expr)
    names: set[str] = set()
    for group in _BY_LABELS.findall(text):
        names.update(part.strip() for part in group.split(",") if part.strip())
    for matchers in re.findall(r"\{([^{}]*)\}", text):
        names.update(_MATCHER_LABEL.findall(matchers))
    match = _LABEL_VALUES.match(expr)
    if match:
        names.add(expr.rsplit(",", 1)[1].strip(" )"))
    return names
