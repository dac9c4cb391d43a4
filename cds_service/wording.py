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

    def need(self, path: str, **fields: Any) -> Missing:
        """A missing-documentation item worded from `path`, keeping `path` as its key."""
        return Missing(str(self(path, **fields)), path)

    def __call__(self, path: str, **fields: Any) -> Text:
        node: Any = self._table
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"cards/reasons.yaml has no entry {path!r}")
            node = node[part]
        if not isinstance(node, str):
            raise KeyError(f"cards/reasons.yaml entry {path!r} is not a string")
        return Text(node.format(**fields), path)


def load(directory: Path = CARDS_DIR) -> Wording:
    with (directory / "reasons.yaml").open(encoding="utf-8") as fh:
        return Wording(yaml.safe_load(fh))


@cache
def default() -> Wording:
    return load()
