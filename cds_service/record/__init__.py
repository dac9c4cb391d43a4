"""The patient's record: prefetch templates (prefetch.py), and the builder (builder.py) that reads
one request's FHIR resources, through cds_service.fhir, into the typed facts of domain.py that
the rules decide on; medication courses and IG doses in medications.py.
"""

from cds_service.record.builder import DATA_ERRORS, IGNORED_STATUSES, RecordBuilder
from cds_service.record.prefetch import (
    OBSERVATION_KEYS,
    check_prefetch_value,
    observation_key_codes,
    prefetch_keys,
)

__all__ = [
    "DATA_ERRORS",
    "IGNORED_STATUSES",
    "OBSERVATION_KEYS",
    "RecordBuilder",
    "check_prefetch_value",
    "observation_key_codes",
    "prefetch_keys",
]
