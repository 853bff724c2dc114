"""Pure unit parsing and formatting: durations, byte sizes, Go duration strings."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

# ASCII digits only: Python's \d also matches other scripts' digits, which no program here reads.
_DURATION_PART = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,9})?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_BYTE_SIZE = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,9})?)\s?([kmgt]?)i?b?", re.IGNORECASE)
_BYTE_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
# Docker and the provider hold durations as Go's time.Duration and sizes as int64: both top out at
# 2^63-1 (nanoseconds, bytes). Anything longer or larger would overflow there (or in timedelta).
MAX_DURATION = timedelta(microseconds=(2**63 - 1) // 1000)
MAX_BYTES = 2**63 - 1


def parse_duration(value: object) -> timedelta:
    """``30`` (seconds), ``"30s"``, ``"1m30s"``, ``"500ms"``, ``"30d"`` -> timedelta; ValueError otherwise."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{value} is negative; durations are >= 0")
        return _bounded_duration(Decimal(value) * 1000, value)
    if isinstance(value, str) and len(value) <= 100:
        text = value.strip()
        parts = _DURATION_PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return _bounded_duration(sum((Decimal(n) * _UNIT_MS[u] for n, u in parts), Decimal(0)), value)
    raise ValueError(f"{_shown(value)} is not a duration like 30s, 1m30s or 500ms")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _bounded_duration(milliseconds: Decimal, given: object) -> timedelta:
    if milliseconds > Decimal(MAX_DURATION // timedelta(microseconds=1)) / 1000:
        raise ValueError(f"{_shown(given)} is longer than the longest duration Docker holds (about 292 years)")
    return timedelta(microseconds=int(milliseconds * 1000))


def go_duration(value: timedelta) -> str:
    """Format like Go's time.Duration.String(): 60s -> "1m0s", 10s -> "10s", 0.5s -> "500ms".

    The docker provider reads healthcheck durations back in this form, so writing any other
    spelling ("60s") shows a diff on every preview.
    """
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest // 1000}" if rest % 1000 == 0 else f"{rest / 1000:g}"
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def parse_bytes(value: object) -> int:
    """``512`` (bytes), ``"512m"``, ``"4g"``, ``"2GiB"`` -> bytes; ValueError otherwise."""
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        size = value
    elif isinstance(value, str) and len(value) <= 100:
        match = _BYTE_SIZE.fullmatch(value.strip())
        if match:
            number, unit = match.groups()
            size = int(Decimal(number) * _BYTE_UNIT[unit.lower()])
    if size is None:
        raise ValueError(f"{_shown(value)} is not a size like 512m, 4g or 2GiB")
    if size > MAX_BYTES:
        raise ValueError(f"{_shown(value)} is larger than the largest size Docker holds (2^63-1 bytes)")
    return size


def mebibytes(value: int) -> int:
    """Bytes -> whole MiB, the unit of the docker provider's memory fields (rounded up)."""
    return -(-value // (1024 * 1024))
