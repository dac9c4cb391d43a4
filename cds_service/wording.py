"""Reason and missing-item wording, kept in cards/reasons.yaml so Python holds no prose."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cds_service.domain import Missing, Text

CARDS_DIR = Path(__file__).resolve().parent.parent / "cards"


class Wording:
    """Looks up 'criterion.key' and formats it; a missing key is a deployment error."""

    def __init__(self, table: dict[str, Any]) -> None:
        self._table = table
        # every sentence by its dotted path, flattened once: the rules word ~20 sentences per
        # evaluation, each then one dict look-up instead of a walk down the nested table
        self._flat: dict[str, str] = {}
        self._flatten(table, "")

    def _flatten(self, node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if not isinstance(key, str) or "." in key:
                continue  # not reachable by a dotted path: the walk in _text says so
            if isinstance(value, dict):
                self._flatten(value, f"{prefix}{key}.")
            elif isinstance(value, str):
                self._flat[f"{prefix}{key}"] = value

    def need(self, path: str, **fields: Any) -> Missing:
        """A missing-documentation item worded from `path`, keeping `path` as its key."""
        return Missing(self._text(path).format(**fields), path)

    def __call__(self, path: str, **fields: Any) -> Text:
        return Text(self._text(path).format(**fields), path)

    def _text(self, path: str) -> str:
        text = self._flat.get(path)
        if text is not None:
            return text
        node: Any = self._table
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"cards/reasons.yaml has no entry {path!r}")
            node = node[part]
        if not isinstance(node, str):
            raise KeyError(f"cards/reasons.yaml entry {path!r} is not a string")
        return node


def load(directory: Path = CARDS_DIR) -> Wording:
    with (directory / "reasons.yaml").open(encoding="utf-8") as fh:
        return Wording(yaml.safe_load(fh))


@cache
def default() -> Wording:
    return load()
