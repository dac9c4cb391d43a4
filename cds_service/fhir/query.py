"""A FHIR query the service runs: one prefetch template it advertises to the EHR and, when the
EHR does not prefill it, searches `fhirServer` with (fhir/client.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrefetchKey:
    """One prefetch template the service advertises, and what it must hold."""

    key: str
    resource_type: str
    query: str  # relative FHIR URL with CDS Hooks tokens
    required: bool  # without it the determination cannot be made (412 if unobtainable)

    @property
    def is_read(self) -> bool:
        return "?" not in self.query
