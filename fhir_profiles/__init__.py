"""FHIR profile data for MediSentinel (generated core R4 tables live in ``r4_core/``)."""
