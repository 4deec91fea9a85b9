"""Inputs: input-set files (checked on the host so a device only sees valid data) and
the risky suite built from the user's data (``risky/``, one registry of families)."""
