"""CDS Hooks and Da Vinci CRD wire shapes (what the service sends an EHR)."""
