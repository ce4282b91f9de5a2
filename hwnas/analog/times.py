"""Times after programming as a command line gives them (`1,3600,1d,30d`), parsed without torch."""

from __future__ import annotations

import math

SECONDS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}


def parse_times(text: str) -> list[float]:
    """Seconds after programming from `1,3600,1d,30d` (plain seconds, or a number with s, m/min, h,
    d, w or y); a ValueError saying which item does not parse, or is not positive and finite."""
    times = []
    for item in text.split(","):
        item = item.strip()
        unit = next((u for u in sorted(SECONDS, key=len, reverse=True) if item.endswith(u)), "")
        try:
            t = float(item[: len(item) - len(unit)]) * (SECONDS[unit] if unit else 1.0)
        except ValueError:
            raise ValueError(f"'{item}' is not a time (seconds, or a number with s, m, h, d, w or y)") from None
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"'{item}': times after programming must be positive and finite")
        times.append(t)
    return times


def format_time(t: float) -> str:
    """`t` seconds in the largest unit that divides it: 1 s, 1 h, 30 d."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if t >= size and (t / size).is_integer():
            return f"{int(t / size)} {unit}"
    return f"{t:g} s"
