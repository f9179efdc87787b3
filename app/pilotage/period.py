"""The period a pilotage figure is computed for (a month `2024-03`, an ISO week `2024-W10`, a quarter
`2024-T1`, a year `2024`, or from/to days), and the instant that closes an as-of day."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from app.errors import ExitCode, Unprocessable
from app.kit.validation import LAST_DAY
from app.rules.episodes import add_months


def month_of(day: date) -> str:
    """`YYYY-MM` of a day, the year on four digits whatever it is (strftime writes year 467 as `467`)."""
    return f"{day.year:04d}-{day.month:02d}"


def end_of_day(day: date) -> datetime:
    """The first instant after `day` (UTC): a fact fetched at a time counts on `day` if it is before this."""
    return datetime.combine(day + timedelta(days=1), time.min, UTC)


class PeriodError(Unprocessable, ValueError):
    """A period that cannot be read or makes no sense; the message says the forms accepted."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Period:
    start: date
    end: date
    label: str

    @staticmethod
    def parse(value: str | None, start: date | None = None, end: date | None = None) -> Period:
        """`2024-03` (month), `2024-W10` (ISO week), `2024-T1` or `2024-Q1` (quarter), `2024` (year); or
        `start` and `end` days (custom). Years before 1900 are refused (no RSA then; and a date arithmetic
        that would leave the calendar)."""
        try:
            period = Period._parse(value, start, end)
        except (ValueError, OverflowError) as exc:  # year 0, or arithmetic out of the calendar
            if isinstance(exc, PeriodError):
                raise
            raise PeriodError(f"the period {value or ''} is before 1900 or out of the calendar") from None
        if period.start.year < 1900:
            raise PeriodError(f"the period {period.label} starts before 1900")
        if period.end > LAST_DAY:  # the same bound as every date a caller gives (app.kit.validation)
            raise PeriodError(f"the period {period.label} ends after {LAST_DAY.isoformat()}")
        return period

    @staticmethod
    def days(start: date, end: date) -> Period:
        """A custom period from `start` to `end` (both included), labelled `start_end`."""
        return Period(start, end, f"{start.isoformat()}_{end.isoformat()}")

    @staticmethod
    def _parse(value: str | None, start: date | None, end: date | None) -> Period:
        if value:
            return Period._named(value)
        if start is None or end is None:
            raise PeriodError("give a period (2024-03, 2024-W10, 2024-T1, 2024) or both from and to days")
        if end < start:
            raise PeriodError("the period ends before it starts")
        if (end - start).days > 3660:
            raise PeriodError("the period is longer than ten years")
        return Period.days(start, end)

    @staticmethod
    def _named(value: str) -> Period:
        text = value.strip().upper()
        if m := re.fullmatch(r"(\d{4})-(\d{2})", text):
            year, month = int(m[1]), int(m[2])
            if not 1 <= month <= 12:
                raise PeriodError(f"no month {month}")
            first = date(year, month, 1)
            return Period(first, add_months(first, 1) - timedelta(days=1), text)
        if m := re.fullmatch(r"(\d{4})-W(\d{2})", text):
            try:
                monday = date.fromisocalendar(int(m[1]), int(m[2]), 1)
            except ValueError as exc:
                raise PeriodError(f"no ISO week {text}") from exc
            return Period(monday, monday + timedelta(days=6), text)
        if m := re.fullmatch(r"(\d{4})-[TQ]([1-4])", text):
            first = date(int(m[1]), 3 * int(m[2]) - 2, 1)
            return Period(first, add_months(first, 3) - timedelta(days=1), f"{m[1]}-T{m[2]}")
        if m := re.fullmatch(r"\d{4}", text):
            return Period(date(int(text), 1, 1), date(int(text), 12, 31), text)
        raise PeriodError(
            f"period {value!r}: write a month 2024-03, an ISO week 2024-W10, a quarter 2024-T1, a year 2024"
        )
