"""Synthetic FHIR Bulk Data exports from the scenario records, at any size.

Every `fhir_fixtures/*/order-sign-request.json` is one patient's record (prefetch + the draft
order, written as a signed `active` order). Copy i of a scenario gets fresh ids (`p<i>-<id>`,
references rewritten), so its expected determination is the scenario's golden with the same ids
rewritten. Filler vital signs (codes no prefetch key asks for) bring a record to the size of a
real chart. Used by the review tests and `make bench-review`.

    python -m tools.bulk_export OUT_DIR --patients 1000 [--filler 120] [--files-per-type 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures"
FILLER_CODE = {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}


@dataclass(frozen=True)
class Scenario:
    name: str
    patient_id: str
    resources: tuple[dict[str, Any], ...]  # the record, the order included
    as_of: dt.date  # the order's authoredOn: the date the golden was evaluated on
    expected: dict[str, Any] | None  # the golden determination (None: no IG order)
    request: dict[str, Any]  # the order-sign request the record came from


def _resources_of(value: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(value, dict):
        return
    if value.get("resourceType") == "Bundle":
        for entry in value.get("entry") or []:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield entry["resource"]
    elif value.get("resourceType") != "OperationOutcome":
        yield value


def scenarios(fixtures: Path = FIXTURES) -> list[Scenario]:
    """Each scenario's record as a Bulk export holds it (each resource once)."""
    out: list[Scenario] = []
    for path in sorted(fixtures.glob("*/order-sign-request.json")):
        request = json.loads(path.read_text(encoding="utf-8"))
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for value in (request.get("prefetch") or {}).values():
            for res in _resources_of(value):
                seen[(res["resourceType"], res["id"])] = res
        authored = None
        for res in _resources_of(request["context"]["draftOrders"]):
            if res["resourceType"] == "MedicationRequest":
                res = {**res, "status": "active"}  # signed: what a later export holds
                authored = authored or res.get("authoredOn")
            seen[(res["resourceType"], res["id"])] = res
        golden = path.parent / "expected-determination.json"
        expected = json.loads(golden.read_text(encoding="utf-8")) if golden.is_file() else None
        out.append(
            Scenario(
                path.parent.name,
                request["context"]["patientId"],
                tuple(seen.values()),
                dt.date.fromisoformat(str(authored)[:10]),
                expected,
                request,
            )
        )
    return out


def _new_id(prefix: str, old: str) -> str:
    new = f"{prefix}{old}"
    if len(new) > 64:  # FHIR id limit: keep it unique and short
        new = f"{prefix}{hashlib.sha256(old.encode()).hexdigest()[:16]}"
    return new


def _rewrite(value: Any, refs: dict[str, str]) -> Any:
    """Every string that is a reference to a renamed resource, renamed (deep copy)."""
    if isinstance(value, dict):
        return {k: _rewrite(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, refs) for v in value]
    if isinstance(value, str):
        return refs.get(value, value)
    return value


def copy_of(scenario: Scenario, prefix: str) -> tuple[str, list[dict[str, Any]], Any]:
    """(patient id, resources, expected determination) of one fresh-id copy."""
    refs: dict[str, str] = {}
    for res in scenario.resources:
        refs[f"{res['resourceType']}/{res['id']}"] = (
            f"{res['resourceType']}/{_new_id(prefix, res['id'])}"
        )
    resources = []
    for res in scenario.resources:
        new = _rewrite(res, refs)
        new["id"] = _new_id(prefix, res["id"])
        resources.append(new)
    return _new_id(prefix, scenario.patient_id), resources, _rewrite(scenario.expected, refs)


def _filler(patient_id: str, index: int, prefix: str) -> dict[str, Any]:
    day = dt.date(2020, 1, 1) + dt.timedelta(days=index * 11)
    return {
        "resourceType": "Observation",
        "id": f"{prefix}hr-{index}",
        "status": "final",
        "code": {"coding": [FILLER_CODE]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": day.isoformat(),
        "valueQuantity": {
            "value": 60 + index % 40,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def write_export(
    out: Path,
    patients: int,
    *,
    filler: int = 0,
    files_per_type: int = 1,
    expected_file: bool = True,
    fresh_ids: bool = True,
    fixtures: Path = FIXTURES,
) -> Counter[str]:
    """Write `patients` records (scenarios in turn) as NDJSON per type plus manifest.json;
    `expected.ndjson` (patient, expected determination) when asked. Without `fresh_ids` the
    scenarios keep their own ids (one copy each: `patients` at most the number of scenarios).
    Returns the expected count per outcome (`not-on-ig`: the scenario's order is not IG
    replacement and the record holds no IG)."""
    out.mkdir(parents=True, exist_ok=True)
    scens = scenarios(fixtures)
    counts: Counter[str] = Counter()
    with ExitStack() as stack:
        handles: dict[str, IO[str]] = {}

        def handle(rtype: str, i: int) -> IO[str]:
            name = (
                f"{rtype}.{i % files_per_type:03d}.ndjson"
                if files_per_type > 1
                else (f"{rtype}.ndjson")
            )
            if name not in handles:
                handles[name] = stack.enter_context((out / name).open("w", encoding="utf-8"))
            return handles[name]

        expected = (
            stack.enter_context((out / "expected.ndjson").open("w", encoding="utf-8"))
            if expected_file
            else None
        )
        for i in range(patients):
            scen = scens[i % len(scens)]
            prefix = f"p{i:06d}-" if fresh_ids else ""
            pid, resources, det = copy_of(scen, prefix)
            resources += [_filler(pid, k, prefix) for k in range(filler)]
            for res in resources:
                handle(res["resourceType"], i).write(json.dumps(res, separators=(",", ":")) + "\n")
            counts[det["outcome"] if det else "not-on-ig"] += 1
            if expected is not None:
                expected.write(
                    json.dumps({"patient": pid, "scenario": scen.name, "determination": det}) + "\n"
                )
    manifest = {
        "transactionTime": dt.datetime.now(dt.UTC).isoformat(),
        "request": "synthetic",
        "requiresAccessToken": False,
        "output": [{"type": name.split(".")[0], "url": name} for name in sorted(handles)],
        "error": [],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--filler", type=int, default=0, help="extra vital signs per patient")
    parser.add_argument("--files-per-type", type=int, default=1)
    args = parser.parse_args()
    counts = write_export(
        args.out, args.patients, filler=args.filler, files_per_type=args.files_per_type
    )
    print(json.dumps(dict(sorted(counts.items())), indent=2))


if __name__ == "__main__":
    main()
