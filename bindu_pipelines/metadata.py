"""Numbers as the Dagster UI shows them: metadata floats rounded to 4 decimals (readable, and
exact enough for every decision made from them); an undefined number is left out."""

from __future__ import annotations

import math

import dagster as dg

DECIMALS = 4


def rounded_float(value: float | None) -> dg.MetadataValue | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return dg.MetadataValue.float(round(float(value), DECIMALS))
