"""schedules/cron.py: expressions, zones and which planned times are due (pure, no I/O)."""

from __future__ import annotations

import datetime as dt

import pytest

from kernel.exceptions import InvalidInput
from kernel.server.schedules import cron

UTC = dt.UTC


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("garbage", "needs 5 fields"),
        ("* * * *", "it has 4"),
        ("0 * * * * *", "it has 6"),  # seconds are not a field here
        ("61 * * * *", "bad minute"),
        ("* 24 * * *", "bad hour"),
        ("* * 32 * *", "bad day-of-month"),
        ("* * * 13 *", "bad month"),
        ("* * * * 8", "bad day-of-week"),
        ("*/0 * * * *", "bad minute"),
        ("5-1 * * * *", "bad minute"),
        ("* * * * MON#9", "bad day-of-week"),
        ("0 0 31 2 *", "bad day-of-month"),  # no February has one
        ("@reboot", "known names are"),
        ("@nonsense", "known names are"),
        ("* * * * * ; rm -rf /", "may hold only"),
        ("$(reboot) * * * *", "may hold only"),
        ("\x00 * * * *", "may hold only"),
        ("é * * * *", "may hold only"),
        ("?" * 300, "at most 255"),
        ("1," * 150 + "1 * * * *", "at most 255"),
    ],
)
def test_garbage_expressions_are_refused_clearly(expression, says):
    with pytest.raises(InvalidInput) as e:
        cron.parse(expression, "UTC")
    assert says in e.value.message
    assert "Traceback" not in e.value.message


@pytest.mark.parametrize(
    "zone",
    ["", "Mars/Olympus_Mons", "utc", "../../../etc/passwd", "/usr/share/zoneinfo/UTC",
     "Europe/../Europe/Berlin", "Europe/Berlin\x00", "x" * 64, 5, None],
)  # fmt: skip
def test_unknown_time_zones_are_refused_clearly(zone):
    with pytest.raises(InvalidInput) as e:
        cron.parse("* * * * *", zone)
    assert "time zone" in e.value.message


def test_not_text_is_refused():
    with pytest.raises(InvalidInput, match="must be a string"):
        cron.parse(5, "UTC")


@pytest.mark.parametrize(
    ("expression", "fields"),
    [("@daily", "0 0 * * *"), ("@HOURLY", "0 * * * *"), ("  */5   *  * * *  ", "*/5 * * * *")],
)
def test_names_and_spacing(expression, fields):
    spec = cron.parse(expression, "UTC")
    assert spec.fields == fields


def test_times_in_a_time_zone():
    spec = cron.parse("0 3 * * 1-5", "Asia/Shanghai")  # 03:00 in UTC+8 is 19:00 UTC
    assert spec.after(t("2026-12-01T12:00:00")) == t("2026-12-01T19:00:00")  # a Tuesday there
    friday_evening = t("2026-12-04T19:00:00")  # Saturday 03:00 there: not a weekday
    assert spec.after(friday_evening) == t("2026-12-06T19:00:00")  # Monday 03:00 there
    assert spec.describe() == "At 03:00 on Monday through Friday"


def test_after_is_strictly_after():
    spec = cron.parse("* * * * *", "UTC")
    assert spec.after(t("2026-01-01T10:00:00")) == t("2026-01-01T10:01:00")
    assert spec.after(t("2026-01-01T10:00:59.999")) == t("2026-01-01T10:01:00")
    assert spec.upcoming(t("2026-01-01T10:01:00"), 3) == [
        t("2026-01-01T10:01:00"),
        t("2026-01-01T10:02:00"),
        t("2026-01-01T10:03:00"),
    ]


def test_daylight_saving_time_as_debian_cron_does():
    spec = cron.parse("30 2 * * *", "Europe/Berlin")
    # 2026-03-29: clocks go from 02:00 to 03:00; 02:30 does not exist: it runs at 03:00 CEST.
    assert spec.after(t("2026-03-28T12:00:00")) == t("2026-03-29T01:00:00")
    # 2026-10-25: 02:30 happens twice; it runs once, the first time (CEST, 00:30 UTC).
    first = spec.after(t("2026-10-24T12:00:00"))
    assert first == t("2026-10-25T00:30:00")
    assert spec.after(first) == t("2026-10-26T01:30:00")


# -- due -------------------------------------------------------------------------------------
EVERY_5 = cron.parse("*/5 * * * *", "UTC")
FIRST = t("2026-06-01T10:00:00")


def test_nothing_due_before_the_first_planned_time():
    d = cron.due(EVERY_5, FIRST, FIRST - dt.timedelta(seconds=1), grace=60)
    assert (d.on_time, d.missed, d.next_at) == (None, 0, FIRST)


def test_on_time_and_a_little_late():
    for late in (0, 0.5, 59.9, 60):
        d = cron.due(EVERY_5, FIRST, FIRST + dt.timedelta(seconds=late), grace=60)
        assert (d.on_time, d.missed) == (FIRST, 0), late
        assert d.next_at == t("2026-06-01T10:05:00")


def test_too_late_is_missed():
    d = cron.due(EVERY_5, FIRST, FIRST + dt.timedelta(seconds=61), grace=60)
    assert (d.on_time, d.missed, d.missed_first, d.missed_last) == (None, 1, FIRST, FIRST)
    assert d.next_at == t("2026-06-01T10:05:00")


def test_down_through_several_planned_times():
    now = t("2026-06-01T10:17:30")  # 10:00, 10:05, 10:10, 10:15 passed; 10:15 too long ago
    d = cron.due(EVERY_5, FIRST, now, grace=60)
    assert (d.on_time, d.missed) == (None, 4)
    assert (d.missed_first, d.missed_last) == (FIRST, t("2026-06-01T10:15:00"))
    assert d.next_at == t("2026-06-01T10:20:00")


def test_down_then_back_just_in_time_for_one():
    now = t("2026-06-01T10:15:20")  # 10:15 is 20 s old: it fires; the three before were missed
    d = cron.due(EVERY_5, FIRST, now, grace=60)
    assert d.on_time == t("2026-06-01T10:15:00")
    assert (d.missed, d.missed_first, d.missed_last) == (3, FIRST, t("2026-06-01T10:10:00"))
    assert d.next_at == t("2026-06-01T10:20:00")


def test_counting_stops_at_the_limit(monkeypatch):
    monkeypatch.setattr(cron, "COUNT_LIMIT", 10)
    now = FIRST + dt.timedelta(hours=2)  # 24 planned times, and 12:00 itself is due now
    d = cron.due(EVERY_5, FIRST, now, grace=60)
    assert (d.on_time, d.missed, d.missed_more) == (None, 10, True)
    assert d.next_at == t("2026-06-01T12:05:00")
