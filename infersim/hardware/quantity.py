"""Sourced numbers: every hardware figure carries value, unit, source and grade."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

Grade = Literal["A", "B", "C", "D"]
"""A datasheet or own measurement, B public benchmark, C calibrated fit, D assumption."""

GRADE_ORDER = "ABCD"

# unit -> (dimension, factor to SI)
UNITS: dict[str, tuple[str, float]] = {
    "FLOP/s": ("FLOP/s", 1.0),
    "GFLOP/s": ("FLOP/s", 1e9),
    "TFLOP/s": ("FLOP/s", 1e12),
    "PFLOP/s": ("FLOP/s", 1e15),
    "B": ("B", 1.0),
    "KB": ("B", 1e3),
    "MB": ("B", 1e6),
    "GB": ("B", 1e9),
    "TB": ("B", 1e12),
    "KiB": ("B", 2.0**10),
    "MiB": ("B", 2.0**20),
    "GiB": ("B", 2.0**30),
    "TiB": ("B", 2.0**40),
    "B/s": ("B/s", 1.0),
    "MB/s": ("B/s", 1e6),
    "GB/s": ("B/s", 1e9),
    "TB/s": ("B/s", 1e12),
    "Gbit/s": ("B/s", 1e9 / 8),
    "s": ("s", 1.0),
    "ms": ("s", 1e-3),
    "us": ("s", 1e-6),
    "ns": ("s", 1e-9),
    "W": ("W", 1.0),
    "USD/h": ("USD/h", 1.0),
    "Hz": ("Hz", 1.0),
    "MHz": ("Hz", 1e6),
    "GHz": ("Hz", 1e9),
    "1": ("1", 1.0),
    "tokens": ("tokens", 1.0),
}


class Quantity(BaseModel):
    """A number with its unit, where it came from and how much to trust it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float
    unit: str
    source: str
    grade: Grade

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, unit: str) -> str:
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r}; allowed: {', '.join(UNITS)}")
        return unit

    @field_validator("source")
    @classmethod
    def _has_source(cls, source: str) -> str:
        if not source.strip():
            raise ValueError("source must say where the number comes from")
        return source

    @property
    def dimension(self) -> str:
        return UNITS[self.unit][0]

    @property
    def si(self) -> float:
        """The value in SI units (FLOP/s, B, B/s, s, W, USD/h, Hz)."""
        return self.value * UNITS[self.unit][1]


def lowest_grade(grades: list[str]) -> str:
    """The least trustworthy grade among ``grades`` (D is lowest)."""
    return max(grades, key=GRADE_ORDER.index) if grades else "A"
