"""The HTTP interface: one router per concern (hooks.py: discovery, hook calls and feedback;
reports.py; health.py), the error answers (errors.py), request bodies and JSON answers (wire.py),
per-request observation (observe.py) and the OpenAPI document (openapi.py). cds_service.app
wires them to one pipeline and one store."""
