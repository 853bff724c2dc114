"""Units: durations, Go duration strings, byte sizes and MiB, with exact values."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from berth.units import go_duration, mebibytes, nano_cpus, parse_bytes, parse_duration, provider_cpus

MiB = 1024**2


@pytest.mark.parametrize(("value", "expected"), [
    (0, timedelta(0)),
    (30, timedelta(seconds=30)),
    ("30s", timedelta(seconds=30)),
    ("1m30s", timedelta(seconds=90)),
    ("500ms", timedelta(milliseconds=500)),
    ("1h0m0s", timedelta(hours=1)),
    ("30d", timedelta(days=30)),
    ("8760h", timedelta(days=365)),
    ("1.5s", timedelta(milliseconds=1500)),
    (" 2m ", timedelta(minutes=2)),
    (timedelta(seconds=7), timedelta(seconds=7)),
])
def test_parse_duration(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    (-1, "-1 is negative; durations are >= 0"),
    ("", "'' is not a duration like 30s, 1m30s or 500ms"),
    ("30", "'30' is not a duration like 30s, 1m30s or 500ms"),
    ("30 s", "'30 s' is not a duration like 30s, 1m30s or 500ms"),
    ("1w", "'1w' is not a duration like 30s, 1m30s or 500ms"),
    ("s", "'s' is not a duration like 30s, 1m30s or 500ms"),
    (True, "True is not a duration like 30s, 1m30s or 500ms"),
    (1.5, "1.5 is not a duration like 30s, 1m30s or 500ms"),
    (None, "None is not a duration like 30s, 1m30s or 500ms"),
])
def test_parse_duration_rejects(value, message):
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert str(caught.value) == message


@pytest.mark.parametrize(("value", "text"), [
    (timedelta(0), "0s"),
    (timedelta(milliseconds=1), "1ms"),
    (timedelta(milliseconds=500), "500ms"),
    (timedelta(seconds=1), "1s"),
    (timedelta(milliseconds=1500), "1.5s"),
    (timedelta(seconds=10), "10s"),
    (timedelta(seconds=59, milliseconds=999), "59.999s"),
    (timedelta(seconds=60), "1m0s"),
    (timedelta(seconds=90), "1m30s"),
    (timedelta(minutes=10), "10m0s"),
    (timedelta(hours=1), "1h0m0s"),
    (timedelta(hours=25, seconds=1), "25h0m1s"),
    (timedelta(days=365), "8760h0m0s"),
    # below a millisecond and between units, as Go writes them (checked against Go's Duration.String)
    (timedelta(microseconds=1), "1µs"),
    (timedelta(microseconds=1500), "1.5ms"),
    (timedelta(microseconds=999), "999µs"),
    (timedelta(seconds=1, microseconds=1), "1.000001s"),
    (timedelta(minutes=1, microseconds=500), "1m0.0005s"),
])
def test_go_duration(value, text):
    assert go_duration(value) == text


# nanoInt64ToDecimalString's answers, checked against the provider's Go function
@pytest.mark.parametrize(("nano", "text"), [
    (2 * 10**9, "2.0"), (10**9, "1.0"), (10 * 10**9, "10."), (100 * 10**9, "100."), (12 * 10**9, "12.0"),
    (5 * 10**7, "0.1"), (10**7, "0.0"), (15 * 10**8, "1.5"), (125 * 10**7, "1.25"), (11 * 10**6, "0.011"),
    (1, "0.0"), (0, "0"),
])
def test_provider_cpus(nano, text):
    assert provider_cpus(nano) == text


@pytest.mark.parametrize(("value", "nano"), [("2", 2 * 10**9), ("0.5", 5 * 10**8), ("0.000000001", 1)])
def test_nano_cpus(value, nano):
    assert nano_cpus(Decimal(value)) == nano


def test_nano_cpus_refuses_what_parse_cpus_calls_too_precise():
    with pytest.raises(ValueError) as caught:
        nano_cpus(Decimal("0.0000000001"))
    assert "more than 9 decimals" in str(caught.value)


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0),
    (512, 512),
    ("512", 512),
    ("512b", 512),
    ("64k", 64 * 1024),
    ("512m", 512 * MiB),
    ("512MB", 512 * MiB),
    ("4g", 4 * 1024**3),
    ("2GiB", 2 * 1024**3),
    ("1.5g", 1536 * MiB),
    ("1t", 1024**4),
    (" 10 m ", 10 * MiB),
])
def test_parse_bytes(value, expected):
    assert parse_bytes(value) == expected


@pytest.mark.parametrize("value", [-1, "lots", "4x", "", "1.5.5m", True, 1.5, None, [512]])
def test_parse_bytes_rejects(value):
    with pytest.raises(ValueError) as caught:
        parse_bytes(value)
    assert str(caught.value) == f"{value!r} is not a size like 512m, 4g or 2GiB"


@pytest.mark.parametrize(("value", "mib"), [(0, 0), (1, 1), (MiB, 1), (MiB + 1, 2), (4 * 1024**3, 4096)])
def test_mebibytes_round_up(value, mib):
    assert mebibytes(value) == mib
