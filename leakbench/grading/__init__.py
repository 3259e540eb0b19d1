"""Scoring a submission: validity, metrics, leak checks, verdict (SPEC §6)."""
