"""Immutable specs of devices, links and nodes, validated on load."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infersim.hardware.quantity import Quantity, lowest_grade

Family = Literal["gpu", "tpu", "cpu", "dataflow", "fpga", "npu"]
Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4"]

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")


def _check_dimension(q: Quantity, dimension: str) -> Quantity:
    if q.dimension != dimension:
        raise ValueError(f"unit {q.unit!r} is not a {dimension} unit")
    if q.value < 0:
        raise ValueError(f"value {q.value} must not be negative")
    return q


def _check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError("names are lowercase letters, digits, '.' and '-' (e.g. h100-sxm)")
    return name


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MemoryTier(_Spec):
    """One level of the memory hierarchy (fast to slow within a device)."""

    name: str
    capacity: Quantity
    bandwidth: Quantity

    @field_validator("capacity")
    @classmethod
    def _bytes(cls, q: Quantity) -> Quantity:
        return _check_dimension(q, "B")

    @field_validator("bandwidth")
    @classmethod
    def _bandwidth(cls, q: Quantity) -> Quantity:
        return _check_dimension(q, "B/s")


class DeviceSpec(_Spec):
    """One accelerator (or one CPU server) as the cost model sees it.

    ``peak_flops`` are dense peaks per dtype. ``memory`` is ordered fast to slow;
    ``main_memory`` names the tier that holds weights and KV cache. ``arch`` carries
    family-specific structure (SM count, MXU size, cores, DSPs), ``efficiency`` the
    cost-model parameters (defaults per family live in ``infersim.costmodels``).
    """

    name: str
    display_name: str
    aliases: tuple[str, ...] = ()
    family: Family
    vendor: str
    peak_flops: dict[Dtype, Quantity]
    memory: tuple[MemoryTier, ...] = Field(min_length=1)
    main_memory: str
    power: Quantity
    price_per_hour: Quantity
    scale_up_link: str | None = None
    host_link: str | None = None
    arch: dict[str, Quantity] = {}
    efficiency: dict[str, Quantity] = {}
    notes: str = ""
    calibrated_from: str | None = None

    _check_name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @field_validator("peak_flops")
    @classmethod
    def _flops(cls, peaks: dict[str, Quantity]) -> dict[str, Quantity]:
        if not peaks:
            raise ValueError("at least one dtype peak is required")
        for q in peaks.values():
            _check_dimension(q, "FLOP/s")
        return peaks

    @field_validator("power")
    @classmethod
    def _power(cls, q: Quantity) -> Quantity:
        return _check_dimension(q, "W")

    @field_validator("price_per_hour")
    @classmethod
    def _price(cls, q: Quantity) -> Quantity:
        return _check_dimension(q, "USD/h")

    @model_validator(mode="after")
    def _main_memory_exists(self) -> DeviceSpec:
        names = [t.name for t in self.memory]
        if self.main_memory not in names:
            raise ValueError(f"main_memory {self.main_memory!r} is not one of {names}")
        return self

    def tier(self, name: str | None = None) -> MemoryTier:
        """The named memory tier, or the main one."""
        name = name or self.main_memory
        return next(t for t in self.memory if t.name == name)

    @property
    def memory_bytes(self) -> float:
        return self.tier().capacity.si

    @property
    def memory_bandwidth(self) -> float:
        return self.tier().bandwidth.si

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; falls back to bf16/fp16 when a format is absent."""
        for d in (dtype, "bf16", "fp16"):
            if d in self.peak_flops:
                return self.peak_flops[d].si
        return max(q.si for q in self.peak_flops.values())

    def quantities(self) -> list[Quantity]:
        qs = [*self.peak_flops.values(), self.power, self.price_per_hour]
        qs += [q for t in self.memory for q in (t.capacity, t.bandwidth)]
        return qs + list(self.arch.values()) + list(self.efficiency.values())

    @property
    def grade(self) -> str:
        """The lowest grade of any number in the spec."""
        return lowest_grade([q.grade for q in self.quantities()])


class LinkSpec(_Spec):
    """An interconnect: per-direction bandwidth per device port group and latency."""

    name: str
    display_name: str
    kind: Literal["nvlink", "nvswitch", "pcie", "infiniband", "ethernet", "ici", "rdu", "upi",
                  "xgmi", "roce"]
    topology: Literal["point-to-point", "switch", "ring", "torus-2d", "torus-3d", "mesh"]
    bandwidth: Quantity
    latency: Quantity
    notes: str = ""

    _check_name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @field_validator("bandwidth")
    @classmethod
    def _bandwidth(cls, q: Quantity) -> Quantity:
        return _check_dimension(q, "B/s")

    @field_validator("latency")
    @classmethod
    def _latency(cls, q: Quantity) -> Quantity:
        return _check_dimension(q, "s")


class NodeSpec(_Spec):
    """A server template: how many devices, joined by which links."""

    name: str
    display_name: str
    device: str
    devices_per_node: int = Field(ge=1)
    scale_up_link: str
    scale_out_link: str | None = None
    host_link: str | None = None
    notes: str = ""

    _check_name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))
