"""Workloads: arrival processes, length distributions and trace readers -> RequestTable."""

from infersim.workloads.arrivals import ARRIVAL_PROCESSES, ArrivalProcess
from infersim.workloads.build import build_requests, stream_rng
from infersim.workloads.config import CHAT_DEFAULTS, TraceReplay, WorkloadConfig
from infersim.workloads.lengths import LENGTH_DISTRIBUTIONS, LengthDistribution
from infersim.workloads.requests import RequestTable
from infersim.workloads.traces import Trace, detect_format, load_trace, read_trace

__all__ = [
    "ARRIVAL_PROCESSES",
    "CHAT_DEFAULTS",
    "LENGTH_DISTRIBUTIONS",
    "ArrivalProcess",
    "LengthDistribution",
    "RequestTable",
    "Trace",
    "TraceReplay",
    "WorkloadConfig",
    "build_requests",
    "detect_format",
    "load_trace",
    "read_trace",
    "stream_rng",
]
