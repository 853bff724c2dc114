"""Pure unit parsing and formatting: durations, byte sizes, Go duration strings, the provider's CPU strings."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

# ASCII digits only: Python's \d also matches other scripts' digits, which no program here reads.
_DURATION_PART = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,9})?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_BYTE_SIZE = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,9})?)\s?([kmgt]?)i?b?", re.IGNORECASE)
_BYTE_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_NS_PER_S = 10**9
MIB = 1024**2
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
    """Format exactly like Go's time.Duration.String(): 60s -> "1m0s", 0.5s -> "500ms", 1.5ms -> "1.5ms".

    The docker provider reads healthcheck durations back with Duration.String(), so any other
    spelling ("60s") is a diff on every preview. Every timedelta (microsecond precision) has one
    such form, which time.ParseDuration turns back into the same value.
    """
    ns = (value.days * 86_400 + value.seconds) * _NS_PER_S + value.microseconds * 1000
    if ns < 0:
        raise ValueError(f"{value} is negative; durations are >= 0")
    if ns == 0:
        return "0s"
    if ns < _NS_PER_S:  # Go switches to ns, µs or ms below one second
        if ns < 1000:
            return f"{ns}ns"
        return _decimal(ns, 3) + "µs" if ns < 1_000_000 else _decimal(ns, 6) + "ms"
    whole, fraction = divmod(ns, _NS_PER_S)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    text = _decimal(secs * _NS_PER_S + fraction, 9) + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def _decimal(value: int, places: int) -> str:
    """``value / 10**places`` written with no trailing zeros (and no point when whole), as Go's fmtFrac."""
    whole, fraction = divmod(value, 10**places)
    digits = f"{fraction:0{places}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def nano_cpus(value: Decimal) -> int:
    """CPUs -> Docker's NanoCPUs, as the provider's Create does (docker/cli opts.ParseCPUs).

    ParseCPUs refuses a value that is not a whole number of billionths ("value is too precise").
    """
    nano = value * _NS_PER_S
    if nano != nano.to_integral_value():
        raise ValueError(f"{value} has more than 9 decimals; docker counts CPUs in billionths")
    return int(nano)


def provider_cpus(nano: int) -> str:
    """The ``cpus`` string the docker provider reads back for NanoCPUs (its nanoInt64ToDecimalString).

    The provider writes the value with 9 decimals; if that text holds exactly nine "0" characters it
    rounds to one decimal (2 -> "2.0", 0.05 -> "0.1", 0.01 -> "0.0"), else it strips trailing zeros
    (10 -> "10.", 1.25 -> "1.25"). berth writes this very string, so whole limits are "2.0", not
    "2", which would replace the container on every up: the read-back came with
    kreuzwerker/terraform-provider-docker#771 (fixing #759), and `cpus` is ForceNew.
    """
    if nano == 0:
        return "0"
    nine = _rounded(nano, 9)
    if nine.count("0") == 9:
        return _rounded(nano, 1)
    return nine.rstrip("0")


def _rounded(nano: int, places: int) -> str:
    """``nano / 10**9`` with `places` decimals, halves away from zero: Go's big.Rat.FloatString(places)."""
    scaled, rest = divmod(nano * 10**places, _NS_PER_S)
    scaled += 2 * rest >= _NS_PER_S
    whole, fraction = divmod(scaled, 10**places)
    return f"{whole}.{fraction:0{places}d}" if places else str(whole)


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
    return -(-value // MIB)
