"""Typed views of the FHIR R4 elements the record builder reads: the only names it may use.

A parsed resource is either an R4B model (fhir.resources, untyped for mypy) or a fastpath view
(plain resources read without building models); both answer these attribute reads the same way
(tests/unit/fhir/test_fastpath.py). The builder sees them through these Protocols, so a misspelt
element name (`authored_on` for `authoredOn`) fails `mypy --strict` instead of reading None at
run time.
Dates and instants are whatever `models.to_when` accepts (date, datetime or string).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

Number = Decimal | float | int
DateLike = Any  # date | datetime | str: normalised by models.to_when


class Coding(Protocol):
    @property
    def system(self) -> str | None: ...
    @property
    def code(self) -> str | None: ...
    @property
    def display(self) -> str | None: ...


class CodeableConcept(Protocol):
    @property
    def coding(self) -> list[Coding] | None: ...
    @property
    def text(self) -> str | None: ...


class Quantity(Protocol):
    @property
    def value(self) -> Number | None: ...
    @property
    def unit(self) -> str | None: ...
    @property
    def code(self) -> str | None: ...


class Range(Protocol):
    @property
    def low(self) -> Quantity | None: ...
    @property
    def high(self) -> Quantity | None: ...


class Period(Protocol):
    @property
    def start(self) -> DateLike: ...
    @property
    def end(self) -> DateLike: ...


class Reference(Protocol):
    @property
    def reference(self) -> str | None: ...
    @property
    def display(self) -> str | None: ...


class TimingRepeat(Protocol):
    @property
    def frequency(self) -> int | None: ...
    @property
    def period(self) -> Number | None: ...
    @property
    def periodUnit(self) -> str | None: ...
    @property
    def count(self) -> int | None: ...
    @property
    def boundsDuration(self) -> Quantity | None: ...
    @property
    def boundsPeriod(self) -> Period | None: ...


class Timing(Protocol):
    @property
    def repeat(self) -> TimingRepeat | None: ...


class DoseAndRate(Protocol):
    @property
    def doseQuantity(self) -> Quantity | None: ...
    @property
    def doseRange(self) -> Range | None: ...


class Dosage(Protocol):
    @property
    def sequence(self) -> int | None: ...
    @property
    def text(self) -> str | None: ...
    @property
    def timing(self) -> Timing | None: ...
    @property
    def route(self) -> CodeableConcept | None: ...
    @property
    def doseAndRate(self) -> list[DoseAndRate] | None: ...


class AdministrationDosage(Protocol):
    """MedicationAdministration.dosage: read for its route only."""

    @property
    def route(self) -> CodeableConcept | None: ...


class DispenseRequest(Protocol):
    @property
    def quantity(self) -> Quantity | None: ...
    @property
    def expectedSupplyDuration(self) -> Quantity | None: ...
    @property
    def numberOfRepeatsAllowed(self) -> int | None: ...


class Medication(Protocol):
    @property
    def code(self) -> CodeableConcept | None: ...


class MedicationConcept(Protocol):
    """What every medication resource names: a concept or a reference to a Medication."""

    @property
    def medicationCodeableConcept(self) -> CodeableConcept | None: ...
    @property
    def medicationReference(self) -> Reference | None: ...


class MedicationRequest(MedicationConcept, Protocol):
    @property
    def authoredOn(self) -> DateLike: ...
    @property
    def dosageInstruction(self) -> list[Dosage] | None: ...
    @property
    def dispenseRequest(self) -> DispenseRequest | None: ...


class _Effective(Protocol):
    @property
    def effectiveDateTime(self) -> DateLike: ...
    @property
    def effectivePeriod(self) -> Period | None: ...


class MedicationStatement(MedicationConcept, _Effective, Protocol):
    @property
    def dateAsserted(self) -> DateLike: ...
    @property
    def dosage(self) -> list[Dosage] | None: ...


class MedicationAdministration(MedicationConcept, _Effective, Protocol):
    @property
    def dosage(self) -> AdministrationDosage | None: ...


class MedicationDispense(MedicationConcept, Protocol):
    @property
    def whenHandedOver(self) -> DateLike: ...
    @property
    def whenPrepared(self) -> DateLike: ...


class ObservationReferenceRange(Protocol):
    @property
    def low(self) -> Quantity | None: ...
    @property
    def high(self) -> Quantity | None: ...


class _ObservationValue(Protocol):
    """What an Observation and each of its components carry: a code, a value, its reading."""

    @property
    def code(self) -> CodeableConcept | None: ...
    @property
    def valueQuantity(self) -> Quantity | None: ...
    @property
    def valueCodeableConcept(self) -> CodeableConcept | None: ...
    @property
    def valueString(self) -> str | None: ...
    @property
    def interpretation(self) -> list[CodeableConcept] | None: ...
    @property
    def referenceRange(self) -> list[ObservationReferenceRange] | None: ...


class ObservationComponent(_ObservationValue, Protocol):
    pass


class Observation(_ObservationValue, Protocol):
    @property
    def effectiveDateTime(self) -> DateLike: ...
    @property
    def effectivePeriod(self) -> Period | None: ...
    @property
    def effectiveInstant(self) -> DateLike: ...
    @property
    def issued(self) -> DateLike: ...
    @property
    def component(self) -> list[ObservationComponent] | None: ...


class Condition(Protocol):
    @property
    def clinicalStatus(self) -> CodeableConcept | None: ...
    @property
    def code(self) -> CodeableConcept | None: ...
    @property
    def onsetDateTime(self) -> DateLike: ...
    @property
    def onsetPeriod(self) -> Period | None: ...
    @property
    def recordedDate(self) -> DateLike: ...


class Encounter(Protocol):
    @property
    def reasonCode(self) -> list[CodeableConcept] | None: ...
    @property
    def period(self) -> Period | None: ...


class Immunization(Protocol):
    @property
    def vaccineCode(self) -> CodeableConcept | None: ...
    @property
    def occurrenceDateTime(self) -> DateLike: ...


class Patient(Protocol):
    @property
    def birthDate(self) -> DateLike: ...
    @property
    def gender(self) -> str | None: ...
