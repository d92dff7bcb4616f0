"""The `infersim` command: a thin shell over the Python API."""

from __future__ import annotations

import json
import sys
from functools import reduce
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from infersim.errors import InfersimError

app = typer.Typer(help="Predict how LLMs behave when served on real hardware.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
hardware_app = typer.Typer(help="The device catalog.", no_args_is_help=True)
models_app = typer.Typer(help="The model catalog.", no_args_is_help=True)
cost_app = typer.Typer(help="What one engine step (or one op) costs.")
app.add_typer(hardware_app, name="hardware")
app.add_typer(models_app, name="models")
app.add_typer(cost_app, name="cost")
optimize_app = typer.Typer(help="Upper bounds: optimal draft trees and schedules.",
                           no_args_is_help=True)
app.add_typer(optimize_app, name="optimize")

out = Console()
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", "-d", help="Catalog device name.")]
DeviceFileOpt = Annotated[Path | None, typer.Option("--device-file",
                                                    help="Your own device YAML.")]


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


# --- hardware -------------------------------------------------------------------------------
@hardware_app.command("list")
def hardware_list(as_json: JsonFlag = False) -> None:
    """All catalog devices."""
    from infersim.hardware import devices

    rows = [
        {"name": d.name, "family": d.family, "vendor": d.vendor, "display_name": d.display_name,
         "bf16_flops": d.peak("bf16"), "memory_bytes": d.memory_bytes,
         "memory_bandwidth": d.memory_bandwidth, "price_per_hour": d.price_per_hour.si,
         "grade": d.grade}
        for d in devices().values()
    ]
    if as_json:
        return _print_json(rows)
    table = Table("name", "family", "device", "bf16 dense", "memory", "bandwidth", "USD/h")
    for r in rows:
        table.add_row(r["name"], r["family"], r["display_name"], _si(r["bf16_flops"], "FLOP/s"),
                      _si(r["memory_bytes"], "B"), _si(r["memory_bandwidth"], "B/s"),
                      f"{r['price_per_hour']:.2f}")
    out.print(table)


@hardware_app.command("show")
def hardware_show(name: str, as_json: JsonFlag = False) -> None:
    """One device with every number's source and grade, and its cost-model parameters."""
    from infersim.costmodels import describe_params
    from infersim.hardware import get_device

    device = get_device(name)
    params = describe_params(device)
    if as_json:
        data = device.model_dump(mode="json")
        data["efficiency_in_force"] = {k: q.model_dump() for k, q in params.items()}
        return _print_json(data)
    out.print(f"[bold]{device.display_name}[/] ({device.name}, {device.family}, "
              f"lowest grade {device.grade})")
    table = Table("quantity", "value", "unit", "grade", "source")
    for dtype, q in device.peak_flops.items():
        table.add_row(f"peak {dtype} (dense)", f"{q.value:g}", q.unit, q.grade, q.source)
    for tier in device.memory:
        main = " (main)" if tier.name == device.main_memory else ""
        for label, q in (("capacity", tier.capacity), ("bandwidth", tier.bandwidth)):
            table.add_row(f"{tier.name}{main} {label}", f"{q.value:g}", q.unit, q.grade,
                          q.source)
    for label, q in (("power", device.power), ("price", device.price_per_hour),
                     *device.arch.items(), *((f"param {k}", v) for k, v in params.items())):
        table.add_row(label, f"{q.value:g}", q.unit, q.grade, q.source)
    out.print(table)


# --- models ---------------------------------------------------------------------------------
def _model_row(m) -> dict:
    family = "hybrid" if m.num_mamba_layers and m.num_attention_layers else (
        "ssm" if m.num_mamba_layers else "moe" if m.is_moe else "dense")
    return {"name": m.name, "family": family, "hf_id": m.hf_id, "params": m.param_count,
            "active_params": m.active_param_count, "layers": m.num_layers,
            "kv_bytes_per_token": m.kv_bytes_per_token, "weight_bytes": m.weight_bytes}


@models_app.command("list")
def models_list(as_json: JsonFlag = False) -> None:
    """All catalog models."""
    from infersim.models import models

    rows = [_model_row(m) for m in models().values()]
    if as_json:
        return _print_json(rows)
    table = Table("name", "family", "HF id", "params", "active", "layers", "KV B/token")
    for r in rows:
        table.add_row(r["name"], r["family"], r["hf_id"], _si(r["params"], ""),
                      _si(r["active_params"], ""), str(r["layers"]),
                      f"{r['kv_bytes_per_token']:,.0f}")
    out.print(table)


@models_app.command("show")
def models_show(name: str, as_json: JsonFlag = False) -> None:
    """One model's architecture and derived quantities (a name, HF id or config.json path)."""
    import dataclasses

    from infersim.models import get_model

    m = get_model(name)
    data = {**dataclasses.asdict(m), **_model_row(m),
            "flops_per_token_at_0": m.flops_per_token(0),
            "ssm_state_bytes_per_sequence": m.ssm_state_bytes_per_sequence}
    data["mixers"] = list(m.mixers)
    data["mlps"] = list(m.mlps)
    if as_json:
        return _print_json(data)
    table = Table("field", "value")
    for key, value in data.items():
        if key in ("mixers", "mlps"):
            value = ", ".join(f"{k} x{value.count(k)}" for k in dict.fromkeys(value))
        table.add_row(key, f"{value:,}" if isinstance(value, int | float) else str(value))
    out.print(table)


# --- cost -----------------------------------------------------------------------------------
def _placement(device: str | None, device_file: Path | None, tp: int = 1, pp: int = 1,
               ep: int = 1):
    from infersim.costmodels import Placement
    from infersim.hardware import resolve_device

    return Placement(resolve_device(device, device_file), tp=tp, pp=pp, ep=ep)


@cost_app.callback(invoke_without_command=True)
def cost(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name/path.")] = None,
    device: DeviceOpt = None,
    device_file: DeviceFileOpt = None,
    tp: Annotated[int, typer.Option(help="Tensor-parallel ranks.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline stages.")] = 1,
    ep: Annotated[int, typer.Option(help="Expert-parallel ranks (divides tp).")] = 1,
    dtype: Annotated[str | None, typer.Option(help="Weight dtype (bf16, fp8, int4, ...).")] = None,
    kv_dtype: Annotated[str | None, typer.Option(help="KV-cache dtype.")] = None,
    batch: Annotated[list[str] | None, typer.Option(
        "--batch", "-b", help="prefill:BxL, decode:BxL or chunk:BxQ@L; several make one step.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Cost of one engine step: time, MFU/MBU and a per-operator breakdown."""
    if ctx.invoked_subcommand:
        return
    from infersim.costmodels import CostModel, parse_batch
    from infersim.errors import ConfigError
    from infersim.models import get_model

    if not model:
        raise ConfigError("--model", model, "name a model (see `infersim models list`)")
    if not batch:
        raise ConfigError("--batch", batch, "give at least one, e.g. --batch decode:64x2048")
    shape = reduce(lambda a, b: a + b, (parse_batch(b) for b in batch))
    cm = CostModel(get_model(model), _placement(device, device_file, tp, pp, ep), dtype,
                   kv_dtype)
    step = cm.step(shape)
    if as_json:
        return _print_json(step.to_dict())
    dev = cm.placement.device
    out.print(f"[bold]{cm.model.name}[/] on {cm.placement.ranks} x {dev.display_name} "
              f"(tp={tp}, pp={pp}, ep={ep}, weights {cm.model.weight_dtype}), "
              f"batch {' + '.join(batch)}")
    table = Table("op", "time (us)", "share", "bound", "GFLOP", "MB", "comm MB")
    for o in step.ops:
        table.add_row(o.name, f"{o.time_s * 1e6:,.1f}", f"{o.time_s / step.seconds:.1%}",
                      o.bound, f"{o.flops / 1e9:,.2f}", f"{o.bytes / 1e6:,.2f}",
                      f"{o.comm_bytes / 1e6:,.2f}")
    out.print(table)
    out.print(f"step time {step.seconds * 1e3:.3f} ms   MFU {step.mfu:.1%}   MBU {step.mbu:.1%}"
              f"   lowest input grade {step.grade}")


op_app = typer.Typer(help="Cost of a single operator.", no_args_is_help=True)
cost_app.add_typer(op_app, name="op")


@op_app.command("gemm")
def cost_gemm(
    m: Annotated[int, typer.Option("--m", help="Rows (tokens).", min=1)],
    n: Annotated[int, typer.Option("--n", help="Output columns.", min=1)],
    k: Annotated[int, typer.Option("--k", help="Reduction dimension.", min=1)],
    device: DeviceOpt = None,
    device_file: DeviceFileOpt = None,
    dtype: Annotated[str, typer.Option(help="Operand dtype.")] = "bf16",
    as_json: JsonFlag = False,
) -> None:
    """Predicted time of one GEMM (m x k) @ (k x n) on one device."""
    from infersim.costmodels.kernels import gemm_time

    t = gemm_time(_placement(device, device_file).device, m, n, k, dtype)
    if as_json:
        return _print_json({"time_s": t})
    out.print(f"GEMM {m}x{k} @ {k}x{n} ({dtype}): {t * 1e6:,.2f} us")


# --- run ------------------------------------------------------------------------------------
SUMMARY_ROWS = (
    ("completed", "completed", "{:,}"), ("duration (s)", "duration_s", "{:,.1f}"),
    ("request throughput (req/s)", "request_throughput", "{:.2f}"),
    ("output throughput (tok/s)", "output_throughput", "{:,.0f}"),
    ("total token throughput (tok/s)", "total_token_throughput", "{:,.0f}"),
    ("goodput (req/s)", "goodput", "{:.2f}"), ("SLO attainment", "slo_attainment", "{:.1%}"),
    ("preemptions", "num_preemptions", "{:,}"), ("engine steps", "num_steps", "{:,}"),
)


def _summary_tables(summary: dict) -> tuple[Table, Table]:
    table = Table("metric", "value", title="summary")
    for label, key, fmt in SUMMARY_ROWS:
        value = summary.get(key)
        table.add_row(label, "-" if value is None else fmt.format(value))
    lat = Table("latency (ms)", "mean", "median", "p90", "p99")
    for name in ("ttft", "tpot", "itl", "e2el"):
        lat.add_row(name.upper(), *(f"{summary[f'{s}_{name}_ms']:,.1f}"
                                    for s in ("mean", "median", "p90", "p99")))
    return table, lat


@app.command()
def run(
    config: Annotated[Path | None, typer.Option("--config", "-c",
                                                help="YAML config (default: embedded).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a key: --set scheduler.max_num_seqs=64 (repeatable).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write results to a folder.")
                       ] = None,
    as_json: JsonFlag = False,
    check: Annotated[bool, typer.Option("--check", help="Check invariants every step.")
                     ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    show_config: Annotated[bool, typer.Option("--show-config",
                                              help="Print the resolved config and exit.")] = False,
) -> None:
    """Simulate serving: the embedded default (Llama-3.1-8B on one H100, Poisson chat
    traffic, 2,000 requests) or a config file, with --set overrides."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from infersim.simulator import SimConfig, simulate
    from infersim.simulator.output import summary_json, write_result

    cfg = SimConfig.load(config, (set_ or []) + (["check=true"] if check else []))
    if show_config:
        sys.stdout.write(cfg.to_yaml())
        return
    err = Console(stderr=True)
    started = time.perf_counter()
    columns = (TextColumn("simulating"), BarColumn(),
               TextColumn("{task.completed:,.0f} requests done"), TimeElapsedColumn())
    with Progress(*columns, console=err, disable=not progress or as_json,
                  transient=True) as bar:
        task = bar.add_task("run", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = simulate(cfg, progress=tick)
    wall = time.perf_counter() - started
    if out_dir is not None:
        write_result(result, out_dir)
    if as_json:
        sys.stdout.write(summary_json(result))
        return
    s = result.summary
    out.print(f"[bold]{cfg.model}[/] on {cfg.replicas} x {cfg.device or cfg.device_file} "
              f"(tp={cfg.placement.tp}), scheduler {cfg.scheduler.name}, "
              f"{s['kv_blocks_total']:,} KV blocks, seed {cfg.seed}")
    out.print(*_summary_tables(s))
    out.print(f"simulated {s['duration_s']:,.1f} s in {wall:.2f} s of wall time; lowest input "
              f"grade {s['lowest_grade']}" + (f"; results in {out_dir}" if out_dir else ""))


# --- optimize tree (speculative decoding) ----------------------------------------------------


# --- optimize schedule (CP-SAT) ------------------------------------------------------------


def main() -> None:
    """Entry point: user errors print one line and exit 2; bugs keep their traceback."""
    try:
        app()
    except InfersimError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
