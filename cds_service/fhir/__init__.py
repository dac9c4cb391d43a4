"""FHIR reading: typed views of the elements the service reads (views.py)."""
