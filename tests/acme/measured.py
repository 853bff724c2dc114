"""What the ACME tier measured, printed at the end of the run (conftest.py) and in the report."""

from __future__ import annotations

METRICS: dict[str, dict[str, object]] = {}
