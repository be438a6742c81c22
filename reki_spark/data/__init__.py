"""Ingestion: one loader per public format and the synthetic sample, typed and quarantined."""
