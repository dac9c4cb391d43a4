"""CDS Hooks 2.0 cards that act, Da Vinci CRD coverage information, order-select, reports."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.domain import Status
from cds_service.hooks import crd
from cds_service.protocol import parse_request
from tests.conftest import DETERMINATION_KEY, ValidatingClient, check_cds_response, problem
from tests.support import cds_schemas

SIGN = "/cds-services/ivig-order-sign"
SELECT = "/cds-services/ivig-order-select"
LOINC = "http://loinc.org"


def _post(client: TestClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(url, json=body)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def _by_type(cards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["extension"]["ivig-cds.card-type"]: c for c in cards}


def _ordered_codes(card: dict[str, Any]) -> list[str]:
    return [
        a["resource"]["code"]["coding"][0]["code"]
        for s in card.get("suggestions", [])
        for a in s["actions"]
    ]


def _select_request(seed: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(seed)
    body["hook"] = "order-select"
    body["context"]["selections"] = ["MedicationRequest/draft-privigen"]
    return body


def _ci(response: dict[str, Any]) -> dict[str, list[Any]]:
    """The coverage-information sub-extensions of the one systemAction, by url."""
    (action,) = response["systemActions"]
    (ext,) = [e for e in action["resource"]["extension"] if e["url"] == crd.EXT_URL]
    out: dict[str, list[Any]] = {}
    for sub in ext["extension"]:
        value = next(v for k, v in sub.items() if k.startswith("value"))
        out.setdefault(sub["url"], []).append(value)
    return out


# -- every response is schema-validated --------------------------------------------------------


def test_the_validating_client_is_live(
    client: ValidatingClient, seed_request: dict[str, Any]
) -> None:
    before = ValidatingClient.validated
    _post(client, SIGN, seed_request)
    assert ValidatingClient.validated == before + 1


def test_the_validator_rejects_a_non_conformant_response() -> None:
    import httpx

    bad = httpx.Response(200, json={"cards": [{"summary": "x" * 200, "indicator": "loud"}]})
    with pytest.raises(cds_schemas.SchemaValidationError):
        check_cds_response("POST", SIGN, bad)


# -- cards and suggestions ---------------------------------------------------------------------


def test_seed_cards_suggest_the_orders_that_document_what_is_missing(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    cards = _by_type(_post(client, SIGN, seed_request)["cards"])
    assert _ordered_codes(cards["secondary-causes-excluded"]) == ["56888-1", "57021-8", "24351-9"]
    # re-testing IgG on therapy cannot document a pre-treatment level, and the card says so:
    # no IgG order is offered next to that advice (a continuation request)
    assert "suggestions" not in cards["baseline-igg"]
    assert "Re-testing now does not help" in cards["baseline-igg"]["detail"]
    assert _ordered_codes(cards["dose"]) == ["29463-7"]
    assert _ordered_codes(cards["safety"]) == ["24323-8"]  # CBC already suggested above
    assert all(s["isRecommended"] for s in cards["secondary-causes-excluded"]["suggestions"])
    for card in cards.values():
        if "suggestions" in card:
            assert card["selectionBehavior"] == "any"
            for s in card["suggestions"]:
                assert s["uuid"]
                (action,) = s["actions"]
                res = action["resource"]
                assert action["type"] == "create"
                assert res["resourceType"] == "ServiceRequest"
                assert res["status"] == "draft"
                assert res["intent"] == "order"
                assert res["subject"] == {"reference": "Patient/seed-cvid-1"}
                assert res["requester"] == {"reference": "Practitioner/dr-immunology"}
                assert res["code"]["coding"][0]["system"] == LOINC


def test_dismissable_cards_offer_override_reasons(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    cards = _by_type(_post(client, SIGN, seed_request)["cards"])
    codes = {c["code"] for c in cards["baseline-igg"]["overrideReasons"]}
    assert "outside-records" in codes
    for kind in ("summary", "secondary-causes-excluded", "dose"):
        assert all(r["display"] for r in cards[kind]["overrideReasons"])
    # home infusion follows the determination: a line of the summary, not a card to dismiss
    assert "home-infusion" not in cards
    assert "S9338" in cards["summary"]["detail"]


def test_cards_link_to_the_policy_and_to_the_report(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    response = _post(client, SIGN, seed_request)
    summary = response["cards"][0]
    urls = [link["url"] for link in summary["links"]]
    assert any("aetna.com" in u for u in urls)
    report = next(u for u in urls if "/reports/" in u)
    assert all(any("/reports/" in link["url"] for link in c["links"]) for c in response["cards"])
    page = client.get(report.split("8080", 1)[1])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    assert summary["extension"]["ivig-cds.coverage-assertion-id"] in html
    assert "baseline-igg" in html
    assert "insufficient" in html


def test_unknown_report_is_404(client: TestClient) -> None:
    assert client.get("/reports/not-a-report").status_code == 404


def test_report_escapes_record_content(client: TestClient, seed_request: dict[str, Any]) -> None:
    draft = seed_request["context"]["draftOrders"]["entry"][0]["resource"]
    draft["id"] = "draft-privigen"
    seed_request["context"]["patientId"] = "seed-cvid-1"
    igg = seed_request["prefetch"]["observations"]["entry"][0]["resource"]
    igg["effectiveDateTime"] = "<script>alert(1)</script>"
    response = _post(client, SIGN, seed_request)
    report = next(
        link["url"] for link in response["cards"][0]["links"] if "/reports/" in link["url"]
    )
    html = client.get(report.split("8080", 1)[1]).text
    assert "<script>alert(1)" not in html


# -- CRD coverage information ------------------------------------------------------------------


def test_seed_gets_a_conditional_coverage_information_system_action(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    response = _post(client, SIGN, seed_request)
    ci = _ci(response)
    assert ci["coverage"] == [{"reference": "Coverage/cov-seed-1"}]
    assert ci["covered"] == ["conditional"]
    assert ci["doc-needed"] == ["clinical"]
    assert ci["info-needed"] == ["OTH"]
    assert "pa-needed" not in ci
    assert [c["code"] for c in ci["billingCode"]] == ["J1459", "S9338", "99601", "99602"]
    assert "pre-treatment serum IgG" in ci["reason"][0]["text"]
    dt.date.fromisoformat(ci["date"][0])
    assert ci["coverage-assertion-id"] == [
        response["cards"][0]["extension"]["ivig-cds.coverage-assertion-id"]
    ]
    # resp-37: the update changes nothing on the order but the coverage-information extension
    (action,) = response["systemActions"]
    assert action["type"] == "update"
    updated = copy.deepcopy(action["resource"])
    updated.pop("extension")
    assert updated == seed_request["context"]["draftOrders"]["entry"][0]["resource"]


def test_no_coverage_known_means_no_coverage_information(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    del seed_request["context"]["draftOrders"]["entry"][0]["resource"]["insurance"]
    response = _post(client, SIGN, seed_request)
    assert "systemActions" not in response
    assert response["cards"][0]["extension"][DETERMINATION_KEY]["outcome"]


def test_coverage_from_the_order_insurance_when_not_prefetched(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    seed_request["prefetch"]["coverage"] = None
    draft = seed_request["context"]["draftOrders"]["entry"][0]["resource"]
    draft["insurance"] = [{"reference": "Coverage/from-order"}]
    assert _ci(_post(client, SIGN, seed_request))["coverage"] == [
        {"reference": "Coverage/from-order"}
    ]


def test_the_crd_coverage_prefetch_names_the_primary_coverage(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    def cov(cid: str, order: int, status: str = "active") -> dict[str, Any]:
        return {
            "resource": {
                "resourceType": "Coverage",
                "id": cid,
                "status": status,
                "order": order,
                "beneficiary": {"reference": "Patient/seed-cvid-1"},
                "payor": [{"display": "Plan " + cid}],
            }
        }

    seed_request["prefetch"]["coverage"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [cov("secondary", 2), cov("old", 1, "cancelled"), cov("primary", 1)],
    }
    assert _ci(_post(client, SIGN, seed_request))["coverage"] == [{"reference": "Coverage/primary"}]


def test_an_earlier_assertion_for_the_same_coverage_is_replaced(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    first = _post(client, SIGN, seed_request)["systemActions"][0]["resource"]
    seed_request["context"]["draftOrders"]["entry"][0]["resource"] = first
    again = _post(client, SIGN, seed_request)["systemActions"][0]["resource"]
    assert [e["url"] for e in again["extension"]].count(crd.EXT_URL) == 1


def _seed_determination(client: TestClient, seed: dict[str, Any]) -> Any:
    import orjson

    pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    return pipeline.evaluate(parse_request(orjson.dumps(seed), "order-sign"))


@pytest.mark.parametrize(
    ("outcome", "unavailable", "covered", "reason_code"),
    [
        ("meets-criteria", {}, "covered", None),
        ("does-not-meet-criteria", {}, "not-covered", None),
        ("insufficient-documentation", {"encounters": "timeout"}, "indeterminate", "technical"),
        ("insufficient-documentation", {}, "conditional", None),
    ],
)
def test_coverage_information_follows_the_determination(
    client: TestClient,
    seed_request: dict[str, Any],
    outcome: str,
    unavailable: dict[str, str],
    covered: str,
    reason_code: str | None,
) -> None:
    det = _seed_determination(client, seed_request)
    det = dataclasses.replace(det, outcome=outcome, unavailable=unavailable)
    if outcome == "does-not-meet-criteria":
        age = dataclasses.replace(det.finding("age"), status=Status.NOT_MET, reason="Too young.")
        det = dataclasses.replace(
            det, findings=tuple(age if f.id == "age" else f for f in det.findings)
        )
    for hook in ("order-sign", "order-select"):
        ext = crd.coverage_extension(
            det,
            coverage_ref="Coverage/c1",
            assertion_id="a-1",
            billing=[],
            hook=hook,
            today=dt.date(2026, 1, 2),
        )
        assert cds_schemas.coverage_information_errors(ext) == []
        subs = {s["url"]: s for s in ext["extension"]}
        assert subs["covered"]["valueCode"] == covered
        if reason_code:
            assert subs["reason"]["valueCodeableConcept"]["coding"][0]["code"] == reason_code
        if hook == "order-select":
            assert "doc-needed" not in subs  # CRD hook-19
        if outcome == "does-not-meet-criteria":
            assert "Too young." in subs["reason"]["valueCodeableConcept"]["text"]


# -- order-select ------------------------------------------------------------------------------


def test_discovery_lists_order_select_and_the_crd_coverage_key(client: TestClient) -> None:
    services = {s["id"]: s for s in client.get("/cds-services").json()["services"]}
    assert services["ivig-order-select"]["hook"] == "order-select"
    for svc in services.values():
        assert svc["prefetch"]["coverage"] == "Coverage?patient={{context.patientId}}&status=active"


def test_order_select_gives_one_light_card_with_the_orders(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    response = _post(client, SELECT, _select_request(seed_request))
    (card,) = response["cards"]
    assert card["indicator"] == "info"
    assert "will be needed at signing" in card["summary"]
    assert card["extension"][DETERMINATION_KEY]["outcome"] == "insufficient-documentation"
    assert set(_ordered_codes(card)) >= {"56888-1", "57021-8", "24351-9", "29463-7"}
    ci = _ci(response)
    assert ci["covered"] == ["conditional"]
    assert "doc-needed" not in ci  # CRD hook-19: secondary hooks signal no documentation need
    assert ci["reason"][0]["text"].startswith("Will be needed at signing")


def test_order_select_evaluates_only_the_selected_orders(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    body = _select_request(seed_request)
    body["context"]["selections"] = ["MedicationRequest/some-other-order"]
    r = client.post(SELECT, json=body)
    assert r.status_code == 400
    assert problem(r.json()).startswith("context.selections")


def test_order_select_without_selections_is_400(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    body = _select_request(seed_request)
    del body["context"]["selections"]
    assert client.post(SELECT, json=body).status_code == 400


def test_non_ig_selection_gets_no_cards(client: TestClient, seed_request: dict[str, Any]) -> None:
    body = _select_request(seed_request)
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    draft["medicationCodeableConcept"] = {"text": "amoxicillin 500 mg"}
    assert _post(client, SELECT, body) == {"cards": []}


# -- Da Vinci CRD configuration options --------------------------------------------------------


def test_discovery_offers_crd_configuration_options(client: TestClient) -> None:
    for svc in client.get("/cds-services").json()["services"]:
        options = {o["code"]: o for o in svc["extension"]["davinci-crd.configuration-options"]}
        assert options["coverage-info"]["type"] == "boolean"
        assert options["max-cards"]["type"] == "integer"
        for o in options.values():
            assert o["name"]
            assert o["description"]


def test_configuration_switches_off_card_types_and_the_system_action(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    seed_request["extension"] = {
        "davinci-crd.configuration": {
            "coverage-info": False,
            "clinical-reminder": False,
            "unknown-option": 3,  # ignored (CRD hook-23)
        }
    }
    response = _post(client, SIGN, seed_request)
    kinds = list(_by_type(response["cards"]))
    assert kinds == ["summary", "dose"]  # coverage-info cards off; the summary card always stays
    assert "systemActions" not in response


def test_configuration_caps_the_number_of_cards(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    seed_request["extension"] = {"davinci-crd.configuration": {"max-cards": 2}}
    response = _post(client, SIGN, seed_request)
    assert len(response["cards"]) == 2
    assert DETERMINATION_KEY in response["cards"][0]["extension"]
    assert "systemActions" in response


@pytest.mark.parametrize(
    "config", [{"max-cards": 0}, {"max-cards": "5"}, {"coverage-info": "no"}, ["coverage-info"]]
)
def test_bad_configuration_is_400(
    client: TestClient, seed_request: dict[str, Any], config: Any
) -> None:
    seed_request["extension"] = {"davinci-crd.configuration": config}
    r = client.post(SIGN, json=seed_request)
    assert r.status_code == 400
    assert problem(r.json()).startswith("extension.davinci-crd.configuration")


def test_billing_code_display_is_the_hcpcs_descriptor(
    client: TestClient, seed_request: dict[str, Any]
) -> None:
    jcode = _ci(_post(client, SIGN, seed_request))["billingCode"][0]
    assert jcode["code"] == "J1459"
    assert "Privigen" in jcode["display"]


def test_cors_for_browser_clients_when_configured(tmp_path: Any) -> None:
    from cds_service.app import create_app
    from tests.conftest import open_settings

    app = create_app(open_settings(tmp_path, cors_origins=["https://sandbox.cds-hooks.org"]))
    with ValidatingClient(app) as c:
        r = c.options(
            "/cds-services",
            headers={
                "Origin": "https://sandbox.cds-hooks.org",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert r.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"
        other = c.get("/cds-services", headers={"Origin": "https://evil.example.org"})
        assert "access-control-allow-origin" not in other.headers


def test_coverage_is_queried_from_fhir_server_when_nothing_names_it(
    client: TestClient, seed_request: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[list[str]] = []

    def fetcher(parsed: Any, specs: list[Any]) -> tuple[dict[str, Any], dict[str, str]]:
        asked.append([s.key for s in specs])
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {"resource": {"resourceType": "Coverage", "id": "fetched", "status": "active"}}
            ],
        }
        return {"coverage": bundle}, {}

    pipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    monkeypatch.setattr(pipeline, "fetcher", fetcher)
    del seed_request["context"]["draftOrders"]["entry"][0]["resource"]["insurance"]
    seed_request["fhirServer"] = "https://ehr.example.org/fhir"
    assert _ci(_post(client, SIGN, seed_request))["coverage"] == [{"reference": "Coverage/fetched"}]
    assert asked == [["coverage"]]
    # the order's insurance (or a coverage prefetch) is enough: no query
    asked.clear()
    seed_request["context"]["draftOrders"]["entry"][0]["resource"]["insurance"] = [
        {"reference": "Coverage/cov-seed-1"}
    ]
    assert _ci(_post(client, SIGN, seed_request))["coverage"] == [
        {"reference": "Coverage/cov-seed-1"}
    ]
    assert asked == []
