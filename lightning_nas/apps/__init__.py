"""Ordinary Lightning code the jobs build on (no NAS inside; the callbacks add it)."""
