"""A bad policy file stops start-up with one line naming the file and the key (issue 11, step 1):
policy parameters are typed (cds_service/knowledge/policy.py), so a renamed or misspelt key is
not found at the first evaluation as a KeyError but when the service starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cds_service import knowledge
from cds_service.knowledge import KNOWLEDGE_DIR


def _copy_with(tmp_path: Path, old: str, new: str) -> Path:
    target = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    policy = target / "policy-cvid-ig.yaml"
    text = policy.read_text(encoding="utf-8")
    assert old in text
    policy.write_text(text.replace(old, new, 1), encoding="utf-8")
    return target


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("    threshold_mg_dl: 500", "    threshold_mgdl: 500", "baseline-igg.threshold_mg_dl"),
        ("    min_serotypes: 4", "    min_serotypes: four", "vaccine-response.min_serotypes"),
        ("    short_course_max_days: 14", "    short_course_max_day: 14", "short_course_max_day"),
    ],
)
def test_a_misspelt_or_mistyped_policy_key_stops_loading(
    tmp_path: Path, old: str, new: str, named: str
) -> None:
    with pytest.raises(knowledge.KnowledgeError) as err:
        knowledge.load(_copy_with(tmp_path, old, new))
    message = str(err.value)
    assert message.startswith("policy-cvid-ig.yaml: ")
    assert named in message
    assert "\n" not in message


def test_serve_refuses_to_start_on_a_bad_policy_with_one_line(tmp_path: Path) -> None:
    directory = _copy_with(tmp_path, "    threshold_mg_dl: 500", "    threshold_mgdl: 500")
    env = {
        **os.environ,
        "IVIG_CDS_KNOWLEDGE_DIR": str(directory),
        "IVIG_CDS_DEMO": "true",
        "IVIG_CDS_DATABASE_PATH": str(tmp_path / "t.db"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("ivig-cds: cannot start: policy-cvid-ig.yaml: ")
    assert "baseline-igg.threshold_mg_dl" in lines[-1]
    assert "Traceback" not in done.stderr


def test_rewording_a_missing_item_does_not_change_the_orders_offered(tmp_path: Path) -> None:
    """Missing-documentation items are typed (domain.Missing keeps its reasons.yaml key) and the
    suggestion rules name keys, so rewriting every missing-item sentence offers the same orders."""
    import json

    import yaml
    from fastapi.testclient import TestClient

    from cds_service.app import create_app
    from tests.conftest import FIXTURES, ROOT, open_settings

    cards = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", cards)
    table = yaml.safe_load((cards / "reasons.yaml").read_text(encoding="utf-8"))

    def reword(node: object) -> object:
        # every missing item (without fields) worded the same: a sentence matcher could no longer
        # tell them apart and would offer every order for any of them
        if isinstance(node, dict):
            return {
                k: "see the chart"
                if k.startswith("missing") and isinstance(v, str) and "{" not in v
                else reword(v)
                for k, v in node.items()
            }
        return node

    (cards / "reasons.yaml").write_text(yaml.safe_dump(reword(table)), encoding="utf-8")
    body = json.loads((FIXTURES / "seed" / "order-sign-request.json").read_text())

    def offered(settings_dir: Path | None) -> list[str]:
        extra = {} if settings_dir is None else {"cards_dir": settings_dir}
        with TestClient(create_app(open_settings(tmp_path / "db", **extra))) as client:
            response = client.post("/cds-services/ivig-order-sign", json=body).json()
        return sorted(s["label"] for c in response["cards"] for s in c.get("suggestions", []))

    (tmp_path / "db").mkdir()
    before, after = offered(None), offered(cards)
    assert before, "the seed is offered orders (IgG, HIV test, work-up, weight)"
    assert after == before


def test_the_runtime_package_imports_no_test_tooling() -> None:
    """tools/ (harness, local FHIR server) is not shipped: serving needs neither requests nor
    rich, and no runtime module imports tools. They are made unimportable (structlog would
    otherwise pick rich up when it happens to be installed, as it is in the dev extra)."""
    code = (
        "import sys\n"
        "for m in ('requests', 'rich', 'tools'): sys.modules[m] = None\n"
        "import cds_service.app, cds_service.cli, cds_service.service\n"
        "cds_service.app.create_app\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    runtime = Path(knowledge.__file__).resolve().parent.parent
    offenders = [
        p.name for p in runtime.rglob("*.py") if "from tools" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("element", "typo"),
    [
        ("authoredOn", "authored_on"),
        ("dosageInstruction", "dosage_instruction"),
        ("valueQuantity", "value_quantity"),
        ("onsetDateTime", "onset_date_time"),
    ],
)
def test_a_misspelt_fhir_element_fails_type_checking(element: str, typo: str) -> None:
    """The record builder reads parsed resources through typed views (cds_service/fhir/views.py):
    renaming an element it reads, in any module of cds_service/record/ that reads it, is a
    mypy --strict error, not a None at run time."""
    root = Path(knowledge.__file__).resolve().parent.parent
    modules = [
        text
        for path in sorted((root / "record").glob("*.py"))
        if f".{element}" in (text := path.read_text(encoding="utf-8"))
    ]
    assert modules
    for text in modules:
        # the module's text as a program (`-c`): always checked afresh, its imports from mypy's
        # cache (a --shadow-file run can be answered from the cache of the unchanged file)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--strict",
                "-c",
                text.replace(f".{element}", f".{typo}"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=root.parent,
        )
        assert done.returncode == 1, done.stdout
        assert f'has no attribute "{typo}"' in done.stdout


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    min_serotypes: 4", "    min_serotypes: 0"),  # share = protective / 0
        ("    on_therapy_min_months: 3", "    on_therapy_min_months: 0"),  # rate / 0 days
        ("    illustrative_weights_kg: [50, 70, 90]", "    illustrative_weights_kg: [0, 70, 90]"),
        (
            "    post_vaccine_window_days: {min: 28, max: 56}",
            "    post_vaccine_window_days: {min: -5, max: 56}",
        ),
    ],
)
def test_policy_numbers_that_divide_by_zero_stop_loading(tmp_path: Any, old: str, new: str) -> None:
    with pytest.raises(knowledge.KnowledgeError):
        knowledge.load(_copy_with(tmp_path, old, new))
