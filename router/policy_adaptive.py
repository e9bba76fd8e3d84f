"""Reading ``routing.adaptive`` of policies.yaml: off, on with the defaults, or tuned.

```yaml
routing:
  adaptive: true                      # or false (the default), or a mapping:
  adaptive: {min_samples: 50, band: 25%, dwell: 10m}
```

A mapping turns it on. ``band`` is a fraction of ``long_after`` (``25%`` or ``0.25``),
at least 0 and below 1.
"""

from __future__ import annotations

from yaml.nodes import MappingNode, Node, ScalarNode

from taskrouter.policy import Adaptive

from .policy_yaml import Entry, NodeReader, line_of, shown

ADAPTIVE_KEYS = ("min_samples", "band", "dwell")
_BOOL_TAG = "tag:yaml.org,2002:bool"
_DEFAULT = Adaptive()


def read_adaptive(reader: NodeReader, entry: Entry | None) -> Adaptive | None:
    """The adaptive settings of ``routing.adaptive``, None when it is off or absent;
    each problem is reported on ``reader``."""
    if entry is None:
        return None
    node, dotted = entry.value, "routing.adaptive"
    if isinstance(node, ScalarNode) and node.tag == _BOOL_TAG:
        return Adaptive() if reader.scalar(node) else None
    if not isinstance(node, MappingNode):
        reader.report(
            line_of(node),
            dotted,
            f"expected true, false or a mapping of {', '.join(ADAPTIVE_KEYS)}; got {shown(node)}",
        )
        return None
    body = reader.mapping(node, dotted, ADAPTIVE_KEYS, "e.g. {min_samples: 50, dwell: 10m}")
    if body is None:
        return None
    samples = reader.optional(
        body, dotted, "min_samples", reader.at_least_one, _DEFAULT.min_samples
    )
    band = reader.optional(body, dotted, "band", lambda n, d: _band(reader, n, d), _DEFAULT.band)
    dwell = reader.optional(body, dotted, "dwell", reader.duration, _DEFAULT.dwell)
    if samples is None or band is None or dwell is None:
        return None
    return Adaptive(min_samples=samples, band=band, dwell=dwell)


def _band(reader: NodeReader, node: Node, dotted: str) -> float | None:
    value: object = None
    if isinstance(node, ScalarNode) and node.tag != _BOOL_TAG:
        text = str(node.value).strip()
        try:
            value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            value = None
    if isinstance(value, float) and 0 <= value < 1:
        return value
    reader.report(
        line_of(node),
        dotted,
        "expected a fraction of long_after such as 25% or 0.25 (at least 0, below 1); got "
        f"{shown(node)}",
    )
    return None


__all__ = ["ADAPTIVE_KEYS", "read_adaptive"]
