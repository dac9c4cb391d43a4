"""Population re-review (`ivig-cds review`): the order-sign determination for every patient on
immune globulin in a FHIR Bulk Data export, evaluated by the same pipeline as the hook."""
