"""The cards as a clinician reads them (issue 12): markdown that survives CommonMark/GFM renderers,
wording chosen per finding (no card contradicts another or its own suggestions), one card per
thing to act on, the in-range dose as an update of the draft order, a stale weight used and named.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markdown_it import MarkdownIt
from markdown_it.token import Token

from cds_service.hooks.crd import copy_json
from cds_service.render.cards import UCUM, _with_dose
from tests.conftest import FIXTURES, load_json
from tests.support.scenario import SCENARIOS

URL = "/cds-services/ivig-order-sign"
MD = MarkdownIt("commonmark").enable("table")  # GFM tables, as EHR and sandbox UIs render them
CRITERIA_ROWS = 9  # every criterion but home infusion, which is a line of its own


def _cards(client: TestClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = client.post(URL, json=body)
    assert r.status_code == 200, r.text[:300]
    cards: list[dict[str, Any]] = r.json()["cards"]
    return cards


def _scenario(client: TestClient, name: str) -> list[dict[str, Any]]:
    return _cards(client, load_json(FIXTURES / name / "order-sign-request.json"))


def _kind(card: dict[str, Any]) -> str:
    kind: str = card["extension"]["ivig-cds.card-type"]
    return kind


def _blocks(tokens: list[Token]) -> list[tuple[str, str]]:
    """(container, inline text) for every inline run: the block each piece of text lands in."""
    out: list[tuple[str, str]] = []
    stack: list[str] = []
    for t in tokens:
        if t.nesting == 1:
            stack.append(t.type)
        elif t.nesting == -1:
            stack.pop()
        elif t.type == "inline":
            container = next(
                (s for s in reversed(stack) if s in ("list_item_open", "td_open", "th_open")),
                stack[-1] if stack else "",
            )
            out.append((container, t.content))
    return out


@pytest.mark.parametrize("name", SCENARIOS)
def test_card_markdown_keeps_its_structure_in_a_gfm_renderer(client: TestClient, name: str) -> None:
    """Headings of a section never fall into the table or the list above them, every table row
    has the header's cells, and the summary's table has one row per criterion."""
    for card in _scenario(client, name):
        tokens = MD.parse(card["detail"])
        blocks = _blocks(tokens)
        for container, text in blocks:
            for heading in ("To resolve", "Next step", "Document:", "Could not be read"):
                if heading in text:  # a section heading opens its own paragraph
                    assert text.lstrip("*_").startswith(heading), (name, _kind(card), text[:80])
            if container in ("list_item_open", "td_open"):
                for heading in ("To resolve", "Next step", "Document:", "Could not be read"):
                    assert heading not in text, (name, _kind(card), container, text[:80])
                assert (
                    "Medicare" not in text
                    or container != "list_item_open"
                    or (_kind(card) == "home-infusion")
                ), (name, text[:80])
        rows = [t for t in tokens if t.type == "tr_open"]
        if _kind(card) == "summary" and "| Criterion |" in card["detail"]:
            assert len(rows) == 1 + CRITERIA_ROWS, (name, len(rows))
        # every row of a table has as many cells as its header
        cells: list[int] = []
        count = 0
        for t in tokens:
            if t.type == "tr_open":
                count = 0
            elif t.type in ("td_open", "th_open"):
                count += 1
            elif t.type == "tr_close":
                cells.append(count)
        assert len(set(cells)) <= 1, (name, _kind(card), cells)
        for link in card.get("links", []):
            assert link["autolaunchable"] is False


def test_the_seed_gets_five_cards_that_do_not_repeat_each_other(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    cards = _cards(client, seed_request)
    assert len(cards) <= 5
    assert [_kind(c) for c in cards] == [
        "summary",
        "baseline-igg",
        "secondary-causes-excluded",
        "dose",
        "safety",
    ]
    summaries = [c["summary"] for c in cards]
    assert len(set(summaries)) == len(summaries)
    # the summary names each gap in one line: exactly the headline of that gap's card
    gap_lines = [
        text
        for container, text in _blocks(MD.parse(cards[0]["detail"]))
        if container == "list_item_open"
    ]
    assert gap_lines == summaries[1:]
    # a missing-documentation item is detailed on one card only
    for item in ("HIV-1/2 antigen/antibody test result", "Record the current weight"):
        assert sum(item in c["detail"] for c in cards) == 1, item
    # no FHIR ids in the card text: evidence is one "Full report (based on N records)" link
    for card in cards:
        assert "Observation/" not in card["detail"]
        assert "Condition/" not in card["detail"]
        assert "LOINC" not in " ".join(s["label"] for s in card.get("suggestions", []))


def test_a_compliant_order_gets_the_summary_card_only(client: TestClient) -> None:
    (card,) = _scenario(client, "initial-meets")
    assert card["indicator"] == "info"
    assert "meets the policy's criteria" in card["summary"]
    assert "S9338" in card["detail"]  # home infusion folded into the summary


def test_advice_follows_the_finding_not_the_criterion(client: TestClient) -> None:
    # a found secondary cause is not told to order the work-up that rules causes out
    cll = {_kind(c): c for c in _scenario(client, "active-cll")}
    text = cll["secondary-causes-excluded"]["summary"] + cll["secondary-causes-excluded"]["detail"]
    assert "cannot be approved" in text
    assert "Order or attach" not in text
    assert "work-up" not in cll["secondary-causes-excluded"]["summary"]
    assert "suggestions" not in cll["secondary-causes-excluded"]
    # an initial request with a normal IgG: no talk of infused IgG, no "cannot pause" override
    normal = {_kind(c): c for c in _scenario(client, "normal-baseline")}
    card = normal["baseline-igg"]
    assert "infused" not in card["detail"]
    assert "therapy-cannot-pause" not in {r["code"] for r in card.get("overrideReasons", [])}
    # below the minimum age: not told to record the date of birth
    infant = {_kind(c): c for c in _scenario(client, "infant")}
    assert "date of birth" not in (infant["age"]["summary"] + infant["age"]["detail"]).lower()
    assert "minimum age" in infant["age"]["summary"]


def test_the_secondary_causes_headline_names_only_what_is_missing(client: TestClient) -> None:
    for name in SCENARIOS:
        for card in _scenario(client, name):
            if _kind(card) != "secondary-causes-excluded" or card["indicator"] != "warning":
                continue
            detail = card["detail"]
            if "HIV-1/2 antigen/antibody test result" not in detail:
                assert "HIV test" not in card["summary"], (name, card["summary"])
            if "malignancy work-up:" not in detail:
                assert "malignancy" not in card["summary"], (name, card["summary"])


def test_no_card_says_a_date_is_both_unknown_and_the_start(client: TestClient) -> None:
    """With no documented start, a date on the cards is the first record of IG, said as such."""
    for name in SCENARIOS:
        cards = _scenario(client, name)
        if not cards:
            continue
        det = cards[0]["extension"]["ivig-cds.determination"]
        if det["therapyStart"] is not None:
            continue
        for card in cards:
            assert not re.search(r"since (it began on )?\d{4}-\d\d-\d\d", card["detail"]), (
                name,
                card["detail"][:200],
            )


def test_retesting_advice_and_an_igg_order_never_share_a_card(client: TestClient) -> None:
    for name in SCENARIOS:
        for card in _scenario(client, name):
            labels = " ".join(s["label"] for s in card.get("suggestions", []))
            if "Re-testing now does not help" in card["detail"]:
                assert "IgG" not in labels, name


def test_an_initial_request_without_igg_is_offered_the_igg_order(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    body = copy.deepcopy(seed_request)
    for key in ("medicationStatements", "medicationAdministrations", "medicationRequests"):
        body["prefetch"].pop(key, None)
        body["prefetch"][key] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    body["prefetch"]["observations"]["entry"] = [
        e
        for e in body["prefetch"]["observations"]["entry"]
        if "2465-3" not in str(e["resource"].get("code"))
    ]
    cards = {_kind(c): c for c in _cards(client, body)}
    det = cards["summary"]["extension"]["ivig-cds.determination"]
    assert det["requestType"] == "initial"
    card = cards["baseline-igg"]
    assert "order one before starting IG" in card["summary"]
    assert [s["label"] for s in card["suggestions"]] == ["Order Serum IgG"]


def test_an_overdose_is_offered_the_in_range_dose_as_an_update_of_the_draft(
    client: TestClient,
) -> None:
    body = load_json(FIXTURES / "overdose" / "order-sign-request.json")
    cards = {_kind(c): c for c in _cards(client, body)}
    dose = cards["dose"]
    # 70 g every 28 days at 70 kg; 400–600 mg/kg per 4 weeks is 28–42 g
    assert "28–42 g every 28 days fits 70 kg" in dose["summary"]
    change = dose["suggestions"][0]
    assert change["label"].startswith("Change to 42 g every 28 days (600 mg/kg per 4 weeks")
    (action,) = change["actions"]
    assert action["type"] == "update"
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    resource = action["resource"]
    assert resource["id"] == draft["id"]
    assert resource["resourceType"] == "MedicationRequest"
    quantity = resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    assert quantity["value"] == 42.0
    assert quantity["code"] == "g"
    # the rest of the order is untouched
    resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = draft["dosageInstruction"][
        0
    ]["doseAndRate"][0]["doseQuantity"]
    assert resource == draft


def test_a_stale_weight_is_used_named_stale_and_a_reweigh_suggested(client: TestClient) -> None:
    cards = {_kind(c): c for c in _scenario(client, "stale-weight")}
    dose = cards["dose"]
    assert re.search(r"last weight \(\d+(\.\d)? kg\) is \d+ months old", dose["summary"])
    assert "At the last recorded weight" in dose["detail"]
    assert "If the patient weighs" not in dose["detail"]  # no made-up weights
    assert "Record current body weight" in [s["label"] for s in dose["suggestions"]]


def test_the_not_met_count_counts_the_dose_but_not_home_infusion(client: TestClient) -> None:
    (summary, *_) = _scenario(client, "overdose")
    assert summary["summary"].endswith("does not meet criteria (1 not met)")


def test_cards_show_dates_as_dates_and_the_determination_keeps_iso(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    cards = _cards(client, seed_request)
    text = "\n".join(c["summary"] + c["detail"] for c in cards)
    assert not re.search(r"\d{4}-\d\d-\d\d", text)
    assert "10 Feb 2024" in text  # the pneumonia of 2024-02-10
    det = cards[0]["extension"]["ivig-cds.determination"]
    assert (
        "2024-02-10" in next(c for c in det["criteria"] if c["id"] == "infection-history")["reason"]
    )


@pytest.mark.parametrize(
    ("module", "written", "typo", "error"),
    [
        ("render/cards.py", '"autolaunchable": False', '"autoLaunchable": False', "autoLaunchable"),
        ("render/cards.py", '"selectionBehavior"] = "any"', '"selectionBehavior"] = "all"', "all"),
        (
            "render/orderables.py",
            '"isRecommended": recommended',
            '"recommended": recommended',
            "recommended",
        ),
        ("hooks/crd.py", '"type": "update"', '"type": "modify"', "modify"),
    ],
)
def test_a_misspelt_card_field_fails_type_checking(
    module: str, written: str, typo: str, error: str
) -> None:
    """Cards, suggestions and actions are typed with the CDS Hooks names (hooks/models.py): a
    misspelt field or a value the specification does not allow is a mypy --strict error where
    the card is written, not a card the EHR silently ignores."""
    import subprocess
    import sys
    from pathlib import Path

    import cds_service

    root = Path(cds_service.__file__).resolve().parent
    text = (root / module).read_text(encoding="utf-8")
    assert written in text
    # the module's text as a program (`-c`): always checked afresh, its imports from mypy's cache
    # (a --shadow-file run can be answered from the cache of the unchanged file)
    checks = {
        mutated: subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "-c", body],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=root.parent,
        )
        for mutated, body in ((False, text), (True, text.replace(written, typo, 1)))
    }
    assert checks[False].returncode == 0, checks[False].stdout  # the module as it is: clean
    assert checks[True].returncode == 1, checks[True].stdout
    assert error in checks[True].stdout


def test_the_dose_update_is_a_copy_the_request_draft_stays_as_sent() -> None:
    """The suggested update rewrites a copy: the draft order in the request (and in the stored
    response's other actions) keeps the dose the clinician entered."""
    draft: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": "draft-1",
        "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": 70, "unit": "g"}}]}],
    }
    before = copy.deepcopy(draft)
    updated = _with_dose(draft, 42.0)
    assert draft == before
    assert updated is not None
    assert updated["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] == {
        "value": 42.0,
        "unit": "g",
        "system": UCUM,
        "code": "g",
    }
    dosing = updated["dosageInstruction"][0]["doseAndRate"][0]
    dosing["doseQuantity"] = before["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    assert updated == draft


def test_a_json_copy_is_equal_and_independent_and_falls_back_for_what_json_cannot_hold() -> None:
    value: dict[str, Any] = {"a": [1, 2.5, None, True, {"b": "é"}], "c": {"d": []}}
    copied = copy_json(value)
    assert copied == value
    copied["a"][4]["b"] = "changed"
    assert value["a"][4]["b"] == "é"
    odd: dict[str, Any] = {"s": {1, 2}}  # not JSON: orjson refuses it, deepcopy still copies
    odd_copy = copy_json(odd)
    assert odd_copy == odd
    assert odd_copy["s"] is not odd["s"]
