"""The differential check (bench/differential.py) sees what it must: the same corpus on every
run, every answer's response and stored determination, and any label whose answer changed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench import differential
from cds_service.app import pipeline_from_settings
from cds_service.core.settings import Settings

SERVICES = ["ivig-order-sign", "ivig-order-select"]


def test_the_corpus_is_the_same_on_every_run() -> None:
    def labels_and_bodies() -> list[tuple[str, str, bytes]]:
        return [
            (label, service, orjson.dumps(request))
            for label, service, request in differential.corpus(SERVICES, 3, ((10, 2),))
        ]

    first = labels_and_bodies()
    assert first == labels_and_bodies()
    labels = [label for label, _, _ in first]
    assert len(labels) == len(set(labels))
    assert any(label.endswith(":mutation2") for label in labels)
    assert labels[-2:] == ["bench:10:1", "bench:10:2"]


def test_mutations_change_the_prefetch_only() -> None:
    seed = orjson.loads((differential.FIXTURES / "seed" / "order-sign-request.json").read_bytes())
    changed = list(differential.mutations(seed, 20, "seed"))
    assert len(changed) == 20
    assert all(c["context"] == seed["context"] for c in changed)
    assert sum(c["prefetch"] != seed["prefetch"] for c in changed) >= 15  # a few drop a no-op


def test_an_answer_line_holds_response_and_stored_determination_without_ids() -> None:
    pipeline = pipeline_from_settings(Settings(demo=True))
    seed = orjson.loads((differential.FIXTURES / "seed" / "order-sign-request.json").read_bytes())
    line = differential.answer_line(pipeline, "ivig-order-sign", seed)
    response, stored = line.split("\t")
    assert orjson.loads(stored)["o"] == "insufficient-documentation"
    assert '"uuid":"U"' in response
    assert "/reports/R" in response
    assert differential._UUID.search(line) is None
    broken = {**seed, "prefetch": {**seed["prefetch"], "patient": 7}}
    assert differential.answer_line(pipeline, "ivig-order-sign", broken).startswith(
        "ERR BadRequest 400 prefetch.patient"
    )


@pytest.mark.parametrize(
    ("after", "differ"),
    [
        ("a\t1\nb\t2\n", []),
        ("a\t1\nb\t3\n", ["b"]),
        ("a\t1\n", ["b"]),
        ("a\t1\nb\t2\nc\t4\n", ["c"]),
    ],
)
def test_compare_names_every_changed_added_or_lost_answer(
    tmp_path: Path, after: str, differ: list[str]
) -> None:
    (tmp_path / "before").write_text("a\t1\nb\t2\n")
    (tmp_path / "after").write_text(after)
    assert differential.compare(tmp_path / "before", tmp_path / "after") == differ
