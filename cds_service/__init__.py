"""ivig-cds: CDS Hooks guidance for immune globulin (IVIG/SCIG) home-infusion orders."""

__version__ = "0.1.0"
