"""An operator's hourly grid carbon intensities (CSV), used instead of the country average.

Columns `country,hour,g_co2_per_kwh`: `hour` is either an hour of the day (`0`-`23`, UTC; a daily
profile) or an hour of a date (`2026-11-26T16`, UTC). A dated hour beats the daily profile.
"""

from __future__ import annotations

import csv
import re
from datetime import datetime
from pathlib import Path

HourlyIntensity = dict[str, float]
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$")


def read_hourly_intensity(path: str) -> HourlyIntensity:
    """Parse the CSV; a ValueError names the line and the problem."""
    table: HourlyIntensity = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path} ({exc.strerror})") from exc
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or set(reader.fieldnames) != {"country", "hour", "g_co2_per_kwh"}:
        raise ValueError(f"{path}: the header must be country,hour,g_co2_per_kwh")
    for line, row in enumerate(reader, start=2):
        country, hour = row["country"].strip().upper(), row["hour"].strip()
        if not re.fullmatch(r"[A-Z]{2}", country):
            raise ValueError(f"{path} line {line}: country must be ISO 3166 alpha-2")
        if not (_DATED.match(hour) or (hour.isdigit() and 0 <= int(hour) <= 23)):
            raise ValueError(f"{path} line {line}: hour must be 0-23 or YYYY-MM-DDTHH")
        try:
            value = float(row["g_co2_per_kwh"])
        except ValueError as exc:
            raise ValueError(f"{path} line {line}: g_co2_per_kwh must be a number") from exc
        if not 0 <= value < 5000:
            raise ValueError(f"{path} line {line}: g_co2_per_kwh out of range")
        key = hour if _DATED.match(hour) else str(int(hour))
        table[f"{country}|{key}"] = value
    return table


def intensity_at(table: HourlyIntensity, country: str, at: datetime) -> float | None:
    """The operator's figure for `country` at `at` (UTC), if the table has one."""
    dated = table.get(f"{country}|{at.strftime('%Y-%m-%dT%H')}")
    return dated if dated is not None else table.get(f"{country}|{at.hour}")
