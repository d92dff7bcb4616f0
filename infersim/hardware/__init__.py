"""Devices, memory tiers, links and node templates, with a sourced catalog."""

from infersim.hardware.catalog import (
    devices,
    get_device,
    get_link,
    get_node,
    links,
    load_device_file,
    nodes,
    resolve_device,
)
from infersim.hardware.quantity import Grade, Quantity, lowest_grade
from infersim.hardware.spec import DeviceSpec, LinkSpec, MemoryTier, NodeSpec

__all__ = [
    "DeviceSpec",
    "Grade",
    "LinkSpec",
    "MemoryTier",
    "NodeSpec",
    "Quantity",
    "devices",
    "get_device",
    "get_link",
    "get_node",
    "links",
    "load_device_file",
    "lowest_grade",
    "nodes",
    "resolve_device",
]
