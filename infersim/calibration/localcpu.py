"""A DeviceSpec for the machine this runs on (family cpu), from what the OS reports and two
short microbenchmarks: peak GEMM throughput and memory bandwidth are measured (grade A, own
measurement, with the date and the call that measured them), everything else is read from
/proc and /sys. Takes a few seconds."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

import numpy as np

from infersim.calibration.runners import CLOCKS, check_clock
from infersim.hardware import DeviceSpec, MemoryTier, Quantity

_CPUINFO = Path("/proc/cpuinfo")
_MEMINFO = Path("/proc/meminfo")
_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")
_NODES = Path("/sys/devices/system/node")

# FLOP per cycle per core by instruction set: 2 FMA pipes x lanes x 2 (assumed pipe count)
_FLOPS_PER_CYCLE = (
    ("amx_bf16", "bf16", 1024, "AMX TMUL: 1,024 BF16 FLOP/cycle/core (Intel AMX brief, 2023)"),
    ("avx512_bf16", "bf16", 128, "AVX512-BF16 VDPBF16PS: 2 FMA pipes x 32 BF16 pairs"),
    ("avx512f", "fp32", 64, "AVX-512: 2 FMA pipes x 16 FP32 lanes x 2"),
    ("avx2", "fp32", 32, "AVX2+FMA: 2 FMA pipes x 8 FP32 lanes x 2"),
)


def cores() -> int:
    """CPU cores this process may run on (affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    out: dict[str, str] = {}
    try:
        for line in _CPUINFO.read_text().splitlines():
            if not line.strip():
                if out:
                    break
                continue
            key, _, value = line.partition(":")
            out.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return out


def cpu_name() -> str:
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def _size(text: str) -> int:
    text = text.strip().upper()
    for suffix, factor in (("K", 1024), ("M", 1024**2), ("G", 1024**3)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


def llc_bytes(default: int = 32 * 1024**2) -> int:
    """Size of the last-level cache (from /sys), or ``default`` when not reported."""
    best = (0, 0)
    try:
        for index in _CACHE.glob("index*"):
            kind = (index / "type").read_text().strip()
            if kind == "Instruction":
                continue
            best = max(best, (int((index / "level").read_text()),
                              _size((index / "size").read_text())))
    except (OSError, ValueError):
        pass
    return best[1] or default


def memory_bytes() -> int:
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 16 * 1024**3


def numa_nodes() -> int:
    nodes = list(_NODES.glob("node[0-9]*")) if _NODES.is_dir() else []
    return max(len(nodes), 1)


# --- microbenchmarks --------------------------------------------------------------------------
def _best(fn, repeats: int, clock: str = "wall") -> float:
    now = CLOCKS[clock]
    fn()
    times = []
    for _ in range(repeats):
        start = now()
        fn()
        times.append(now() - start)
    return min(times)


GEMM_SHAPES = ((2048, 2048, 2048), (512, 8192, 2048), (1024, 4096, 4096))
"""(m, n, k) of the peak measurement: a square GEMM and two of a model's weight GEMMs
(x @ W^T, the call a forward pass makes); the peak is the fastest of them."""


def measure_gemm_flops(dtype: str, repeats: int = 4, clock: str = "wall",
                       shapes: tuple[tuple[int, int, int], ...] = GEMM_SHAPES
                       ) -> tuple[float, str]:
    """The best FLOP/s over ``shapes`` (each best of ``repeats``) and how it was measured
    (torch when installed, else NumPy, which has fp32 only)."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None and dtype != "fp32":
        raise ValueError("NumPy measures fp32 only")
    best, where = 0.0, shapes[0]
    for m, n, k in shapes:
        if torch is not None:
            tdtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
            x = torch.randn(m, k).to(tdtype)
            w = torch.randn(n, k).to(tdtype)
            t = _best(lambda x=x, w=w: torch.nn.functional.linear(x, w), repeats, clock)
        else:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((m, k), dtype=np.float32)
            w = rng.standard_normal((n, k), dtype=np.float32)
            t = _best(lambda x=x, w=w: x @ w.T, repeats, clock)
        rate = 2.0 * m * n * k / t
        if rate > best:
            best, where = rate, (m, n, k)
    lib = (f"torch {torch.__version__} F.linear, {torch.get_num_threads()} threads"
           if torch is not None else f"numpy {np.__version__} x @ W.T")
    shown = ", ".join("x".join(str(d) for d in s) for s in shapes)
    how = (f"{lib}, {dtype}, fastest of (m x n x k) {shown} (it was {'x'.join(map(str, where))})"
           f", each best of {repeats}, {clock} clock")
    return best, how


def measure_copy_bandwidth(nbytes: int, repeats: int = 5, rounds: int = 1,
                           clock: str = "wall") -> tuple[float, str]:
    """Best-of-``repeats`` bytes/s of copying an ``nbytes`` buffer (read + write counted),
    ``rounds`` copies per timing (small buffers stay in cache)."""
    n = max(nbytes // 4, 1024)
    try:  # torch copies with all threads, as its kernels do; NumPy copies with one
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        src, dst = torch.ones(n), torch.empty(n)
        copy, lib = (lambda: dst.copy_(src)), f"torch {torch.__version__} Tensor.copy_"
    else:
        src = np.ones(n, dtype=np.float32)
        dst = np.empty_like(src)
        copy, lib = (lambda: np.copyto(dst, src)), f"numpy {np.__version__} np.copyto"

    def run() -> None:
        for _ in range(rounds):
            copy()

    t = _best(run, repeats, clock)
    how = (f"{lib} of {n * 4 / 2**20:.0f} MiB x {rounds}, read + write counted, best of "
           f"{repeats}, {clock} clock")
    return 2.0 * n * 4 * rounds / t, how


# --- the device -------------------------------------------------------------------------------
def _q(value: float, unit: str, source: str, grade: str = "A") -> Quantity:
    return Quantity(value=float(f"{value:.4g}"), unit=unit, source=source, grade=grade)


def local_cpu_device(name: str = "local-cpu", threads: int | None = None,
                     clock: str = "wall") -> DeviceSpec:
    """This machine as a DeviceSpec: cores from the affinity mask (or ``threads``), caches
    and memory from /sys and /proc, peak GEMM FLOP/s and bandwidths measured now (with
    ``threads`` PyTorch threads and the ``clock`` the runners will use)."""
    check_clock(clock, threads)
    today = _dt.datetime.now(_dt.UTC).date().isoformat()
    own = f"own measurement on {today} (infersim calibrate local-device): "
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    n_cores = threads or cores()
    try:
        import torch

        dtypes = ("bf16", "fp32")
    except ImportError:
        torch, dtypes = None, ("fp32",)
    before = torch.get_num_threads() if torch is not None else 0
    if torch is not None and threads:
        torch.set_num_threads(threads)
    try:
        peaks = {}
        for dtype in dtypes:
            flops, how = measure_gemm_flops(dtype, clock=clock, repeats=4 if dtype != "fp32"
                                            else 2)
            peaks[dtype] = _q(flops / 1e9, "GFLOP/s", own + how)
        llc = llc_bytes()
        dram_bw, dram_how = measure_copy_bandwidth(256 * 1024**2, repeats=4, clock=clock)
        working_set = min(llc // 4, 8 * 1024**2)
        llc_bw, llc_how = measure_copy_bandwidth(working_set, repeats=5, rounds=20, clock=clock)
    finally:
        if torch is not None and threads:
            torch.set_num_threads(before)
    mem = memory_bytes()
    sysfs = "read from /sys/devices/system/cpu/cpu0/cache (largest data cache)"
    memory = (
        MemoryTier(name="llc", capacity=_q(llc / 2**20, "MiB", sysfs),
                   bandwidth=_q(llc_bw / 1e9, "GB/s", own + llc_how)),
        MemoryTier(name="dram", capacity=_q(mem / 2**30, "GiB", "MemTotal in /proc/meminfo"),
                   bandwidth=_q(dram_bw / 1e9, "GB/s", own + dram_how)),
    )
    mhz = float(info.get("cpu MHz", "0") or 0)
    arch = {"cores": _q(n_cores, "1", f"threads used ({threads})" if threads else
                        "os.sched_getaffinity: cores this process may use"),
            "numa_nodes": _q(numa_nodes(), "1", "entries under /sys/devices/system/node")}
    theory = []
    if mhz:
        arch["clock"] = _q(mhz / 1e3, "GHz", "'cpu MHz' in /proc/cpuinfo: the clock the OS "
                           "reports, not the sustained all-core clock", "D")
    for flag, dtype, per_cycle, why in _FLOPS_PER_CYCLE:
        if flag in flags and dtype in peaks and f"flops_per_cycle_{dtype}" not in arch:
            arch[f"flops_per_cycle_{dtype}"] = _q(per_cycle, "1", f"flag {flag}: {why}", "D")
            if mhz:
                theory.append(f"{dtype} {n_cores * mhz * 1e6 * per_cycle / 1e9:,.0f} GFLOP/s")
    efficiency = {}
    if numa_nodes() == 1:
        efficiency["numa_efficiency"] = _q(1.0, "1", "one NUMA node (/sys/devices/system/node)")
    vendor = info.get("vendor_id", platform.machine()) or "unknown"
    return DeviceSpec(
        name=name,
        display_name=f"{cpu_name()} ({n_cores} core{'s' if n_cores > 1 else ''}, this machine)",
        family="cpu",
        vendor={"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}.get(vendor, vendor),
        peak_flops=peaks,
        memory=memory,
        main_memory="dram",
        power=_q(0, "W", "not measured: a VM does not report its power draw", "D"),
        price_per_hour=_q(0, "USD/h", "this machine: no price", "D"),
        arch=arch,
        efficiency=efficiency,
        notes=("Built by `infersim calibrate local-device`. Peaks are measured GEMM rates, not "
               "cores x clock x FLOP/cycle" + (f" (which gives {', '.join(theory)} at the "
                                               "reported clock)" if theory else "")
               + "; bandwidths are measured copies. Fit the efficiencies with "
               "`infersim calibrate run` + `infersim calibrate fit`."),
    )
