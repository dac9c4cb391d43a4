"""Hypothesis strategies for the fuzz tests: JSON values of the wrong type, and every slot of a
resource one of them can replace."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

odd_values = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.text(max_size=3),
    st.lists(st.integers(0, 2), max_size=2),
    st.just({}),
    st.just({"coding": "x"}),
    st.just([{"system": 1, "code": []}]),
    st.just(True),
)


def slots(node: Any, depth: int = 0) -> list[tuple[Any, Any]]:
    """Every (container, key) below a resource, nested objects and arrays included."""
    found: list[tuple[Any, Any]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        if key == "resourceType" and depth == 0:
            continue
        found.append((node, key))
        if isinstance(value, dict | list) and depth < 4:
            found.extend(slots(value, depth + 1))
    return found
