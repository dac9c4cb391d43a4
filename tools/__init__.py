"""Test and operations tooling (scenario harness, local FHIR server): not in the runtime package."""
