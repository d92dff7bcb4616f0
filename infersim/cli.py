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


def _group(help: str, **options) -> typer.Typer:
    """A command group whose help text is reflowed (markdown) and shown when called bare."""
    options.setdefault("no_args_is_help", True)
    return typer.Typer(help=help, rich_markup_mode="markdown", **options)


app = _group("Predict how LLMs behave when served on real hardware.", add_completion=False,
             pretty_exceptions_enable=False)
hardware_app = _group("The device catalog.")
models_app = _group("The model catalog.")
cost_app = _group("What one engine step (or one op) costs.", no_args_is_help=False)
app.add_typer(hardware_app, name="hardware")
app.add_typer(models_app, name="models")
app.add_typer(cost_app, name="cost")
optimize_app = _group("Upper bounds: optimal draft trees and schedules.")
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
    note = cm.memory_note()
    if note:
        out.print(f"[yellow]note:[/] {note}")


op_app = _group("Cost of a single operator.")
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


# --- calibrate ------------------------------------------------------------------------------
calibrate_app = _group("Time real kernels, fit a device's efficiencies, report the "
                            "held-out error, replay simulated steps.")
app.add_typer(calibrate_app, name="calibrate")
SplitOpt = Annotated[str, typer.Option("--split", help="auto (by model when the profile holds "
                                       "3+ models, else by shape), model, shape or none.")]
HoldoutOpt = Annotated[str | None, typer.Option(
    "--holdout-models", help="Comma-separated models to hold out (split by model).")]
EveryOpt = Annotated[int, typer.Option("--every", help="By shape: hold out every N-th size.")]
ProfileDeviceOpt = Annotated[str | None, typer.Option(
    "--device-name", help="Rows of this device (when the profile holds several).")]
ClockOpt = Annotated[str, typer.Option(
    "--clock", help="wall, or cpu: the process's CPU time (needs --threads 1; for a CPU "
    "shared with other jobs), or graph: CUDA events around a CUDA graph's replay (GPU time "
    "without launch cost).")]


def _csv_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    from infersim.errors import ConfigError

    if not text:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(option, text, "expected comma-separated integers, e.g. 1,2,4") from None


def _csv_names(text: str | None) -> tuple[str, ...] | None:
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else None


def _summary_table(summary) -> Table:
    table = Table("op class", "set", "kernels", "MAPE", "median APE", "worst")
    for r in summary.itertuples():
        table.add_row(r.op_class, r.set, f"{r.kernels:,}", f"{r.mape:.1%}", f"{r.median_ape:.1%}",
                      f"{r.worst:+.1%}")
    return table


@calibrate_app.command("run")
def calibrate_run(
    device_name: Annotated[str, typer.Option("--device-name", help="Name to file the "
                                             "measurements under (e.g. local-cpu, h100).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model whose layer shapes to time.")],
    out_path: Annotated[Path, typer.Option("--out", help="Profile CSV to write.")],
    backend: Annotated[str, typer.Option(help="torch or numpy.")] = "torch",
    quick: Annotated[bool, typer.Option("--quick", help="A small grid (CI).")] = False,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, "
                                        "cuda.")] = "auto",
    dtype: Annotated[str | None, typer.Option(help="bf16 (torch default), fp16, fp32.")] = None,
    tp: Annotated[str | None, typer.Option(help="TP splits to time, e.g. 1,2,4.")] = None,
    repeats: Annotated[int | None, typer.Option(help="Timed repeats (5; 3 with --quick).")
                       ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: library's).")
                       ] = None,
    clock: ClockOpt = "wall",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Time a model's layer kernels (GEMMs, attention, norms) and write a profile CSV."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from infersim.calibration import run_profile, write_profile
    from infersim.models import get_model

    spec = get_model(model)
    started = time.perf_counter()
    with Progress(BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task("kernels", total=None)
        df = run_profile(spec, device_name, backend, quick, _csv_ints(tp, "--tp"), device, dtype,
                         repeats, threads,
                         progress=lambda i, n: bar.update(task, completed=i, total=n),
                         clock=clock)
    write_profile(df, out_path)
    env = df.iloc[0]
    counts = ", ".join(f"{n} {op}" for op, n in df["op"].value_counts().sort_index().items())
    out.print(f"{len(df)} kernels ({counts}) of {spec.name} on {env['hardware']} "
              f"({env['backend']}, {env['dtype']}, {env['threads']} threads) in "
              f"{time.perf_counter() - started:.0f} s -> {out_path}")


@calibrate_app.command("import-tables")
def calibrate_import_tables(
    directory: Annotated[Path, typer.Argument(help="Vidur kernel tables (compute/<gpu>/<org>/"
                                              "<model>/mlp.csv), e.g. ../shared/data/kernels.")],
    out_path: Annotated[Path, typer.Option("--out", help="Profile CSV to write.")],
    gpu: Annotated[str | None, typer.Option(help="Only this GPU's tables (a100, a40).")] = None,
) -> None:
    """Import measured kernel tables into the profile format."""
    from infersim.calibration import import_tables, write_profile

    df = import_tables(directory, gpu)
    write_profile(df, out_path)
    per = ", ".join(f"{g}: {n:,}" for g, n in df["device_name"].value_counts().sort_index().items())
    out.print(f"{len(df):,} kernels ({per}) from {df['model'].nunique()} models -> {out_path}")


@calibrate_app.command("fit")
def calibrate_fit(
    profile: Annotated[Path, typer.Option("--profile", help="Profile CSV.")],
    base: Annotated[str, typer.Option("--base", help="Catalog device, device file, or "
                                      "local-cpu (measured now).")],
    out_path: Annotated[Path, typer.Option("--out", help="Device YAML to write.")],
    device_name: ProfileDeviceOpt = None,
    split: SplitOpt = "auto",
    holdout_models: HoldoutOpt = None,
    every: EveryOpt = 3,
    name: Annotated[str | None, typer.Option(help="Name of the calibrated device.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Fit the base device's efficiency parameters to a profile; write a device file."""
    from infersim.calibration import fit_device, make_split, read_profile, resolve_base
    from infersim.calibration.predict import select_device_rows

    df = select_device_rows(read_profile(profile), device_name, str(profile))
    sp = make_split(df, split, _csv_names(holdout_models), every)
    result = fit_device(df, resolve_base(base), profile, sp, name)
    result.write(out_path)
    if as_json:
        return _print_json({"device": result.device.name, "out": str(out_path),
                            "split": sp.describe(), "fitted": result.fitted,
                            "classes": result.summary.to_dict(orient="records")})
    table = Table("parameter", "value", "unit")
    for key, q in result.device.efficiency.items():
        if key in result.fitted:
            table.add_row(key, f"{q.value:g}", q.unit)
    out.print(f"[bold]{result.device.name}[/] from {profile} ({len(df):,} kernels; split "
              f"{sp.describe()})")
    out.print(table, _summary_table(result.summary))
    out.print(f"device file -> {out_path}")


@calibrate_app.command("transfer")
def calibrate_transfer(
    device_file: Annotated[Path, typer.Option("--device-file", help="A calibrated device YAML.")],
    base: Annotated[str, typer.Option("--base", help="Device to carry its fitted efficiencies "
                                      "to (catalog name or device file).")],
    out_path: Annotated[Path, typer.Option("--out", help="Device YAML to write.")],
    name: Annotated[str | None, typer.Option(help="Name of the new device.")] = None,
) -> None:
    """Put a calibrated device's fitted efficiencies on another device (grade D)."""
    from infersim.calibration import resolve_base, transfer, write_device
    from infersim.hardware import load_device_file

    src = load_device_file(device_file)
    device = transfer(src, resolve_base(base), name)
    write_device(device, out_path, f"Efficiencies of {src.name} ({device_file}) on "
                 f"{device.display_name}, by `infersim calibrate transfer`.")
    moved = [k for k, q in src.efficiency.items() if q.grade == "C"]
    out.print(f"{device.name}: {', '.join(moved)} from {src.name} -> {out_path}")


@calibrate_app.command("report")
def calibrate_report(
    profile: Annotated[Path, typer.Option("--profile", help="Profile CSV.")],
    device_file: Annotated[Path, typer.Option("--device-file", help="Device YAML to judge.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for summary.json, "
                                                 "kernels.csv and the plot.")] = None,
    device_name: ProfileDeviceOpt = None,
    split: SplitOpt = "auto",
    holdout_models: HoldoutOpt = None,
    every: EveryOpt = 3,
    as_json: JsonFlag = False,
) -> None:
    """Per op class: fit and held-out MAPE and worst error of a device file on a profile."""
    from infersim.calibration import report, write_report
    from infersim.hardware import load_device_file

    rep = report(profile, load_device_file(device_file), device_name, split,
                 _csv_names(holdout_models), every)
    if out_dir is not None:
        write_report(rep, out_dir)
    if as_json:
        return _print_json(rep.to_dict())
    out.print(f"[bold]{rep.device.name}[/] on {profile} ({len(rep.evaluation):,} kernels; split "
              f"{rep.split.describe()}); error = predicted / measured - 1")
    out.print(_summary_table(rep.summary))
    if out_dir is not None:
        out.print(f"results -> {out_dir}")


@calibrate_app.command("replay")
def calibrate_replay(
    steps: Annotated[Path, typer.Option("--steps", help="steps.csv of `infersim run --out`.")],
    device_file: Annotated[Path, typer.Option("--device-file", help="Device YAML to judge.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model (default: the "
                                              "run's config.yaml).")] = None,
    tp: Annotated[int | None, typer.Option(help="TP of the run (default: its config).")] = None,
    max_steps: Annotated[int, typer.Option(help="Steps to replay, evenly spaced.")] = 40,
    layers: Annotated[int, typer.Option(help="Decoder layers to run (scaled to the model's).")
                      ] = 2,
    repeats: Annotated[int, typer.Option(help="Timed repeats per step (median).")] = 3,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="bf16, fp16 or fp32.")] = "bf16",
    threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
    clock: ClockOpt = "wall",
    out_path: Annotated[Path | None, typer.Option("--out", help="Per-step CSV to write.")
                        ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run simulated steps on a real transformer; compare measured and predicted time."""
    from infersim.atomic import write_text_atomic
    from infersim.calibration import replay
    from infersim.hardware import load_device_file

    result = replay(steps, load_device_file(device_file), model, tp, max_steps, layers, repeats,
                    device, dtype, threads, clock)
    if out_path is not None:
        write_text_atomic(out_path, result.steps.to_csv(index=False))
    s = result.summary
    if as_json:
        return _print_json(s)
    table = Table("step", "decode", "prefill", "measured (ms)", "predicted (ms)", "error")
    for r in result.steps.itertuples():
        pre = f"{r.prefill_seqs}x{r.prefill_len}@{r.prefill_context}" if r.prefill_seqs else "-"
        dec = f"{r.decode_seqs}@{r.decode_context}" if r.decode_seqs else "-"
        table.add_row(str(r.step), dec, pre, f"{r.measured_s * 1e3:,.2f}",
                      f"{r.predicted_s * 1e3:,.2f}", f"{r.error:+.1%}")
    out.print(table)
    out.print(f"{s['steps']} steps of {s['model']} (tp={s['tp']}, {s['layers_run']} of "
              f"{s['num_layers']} layers run, {s['backend']} {s['dtype']}) on {s['device']}: "
              f"step time MAPE {s['mape']:.1%}, median {s['median_ape']:.1%}, worst "
              f"{s['worst']:+.1%} (model forward; engine overheads excluded)")


@calibrate_app.command("local-device")
def calibrate_local_device(
    out_path: Annotated[Path, typer.Option("--out", help="Device YAML to write.")],
    name: Annotated[str, typer.Option(help="Device name.")] = "local-cpu",
    threads: Annotated[int | None, typer.Option(help="Threads to measure with (default: "
                                                "all cores this process may use).")] = None,
    clock: ClockOpt = "wall",
) -> None:
    """Describe this machine's CPU as a device (measured peak GEMM rate and bandwidth)."""
    from infersim.calibration import local_cpu_device, write_device

    device = local_cpu_device(name, threads, clock)
    write_device(device, out_path, "Built by `infersim calibrate local-device` on this machine.")
    peaks = ", ".join(f"{d} {q.value:g} {q.unit}" for d, q in device.peak_flops.items())
    bws = ", ".join(f"{t.name} {t.bandwidth.value:g} {t.bandwidth.unit}" for t in device.memory)
    out.print(f"{device.display_name}: {peaks}; {bws} -> {out_path}")


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


def _speculation_line(sp: dict) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None or value != value else fmt.format(value)

    return (f"speculation: {sp['drafter']}, policy {sp['policy']}: acceptance rate "
            f"{num(sp['acceptance_rate'], '{:.1%}')}, mean accepted length "
            f"{num(sp['mean_accepted_length'], '{:.2f}')} tokens per verify, mean K "
            f"{num(sp['mean_k'], '{:.2f}')}; draft {num(sp['draft_share'], '{:.1%}')} and "
            f"verify {num(sp['verify_share'], '{:.1%}')} of busy time")


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
    if "speculation" in s:
        out.print(_speculation_line(s["speculation"]), highlight=False)
    out.print(f"simulated {s['duration_s']:,.1f} s in {wall:.2f} s of wall time; lowest input "
              f"grade {s['lowest_grade']}" + (f"; results in {out_dir}" if out_dir else ""))


# --- capacity -------------------------------------------------------------------------------
def _probe_line(row: dict | None, q: str, trace: bool) -> str:
    cells = (("round", 5), ("rate req/s", 11), *((("scale", 8),) if trace else ()),
             ("attain", 7), (f"TTFT {q}", 10), (f"TPOT {q}", 9), (f"E2EL {q}", 10),
             ("pass", 5), ("wall s", 7))
    if row is None:
        return "[bold]" + " ".join(f"{name:>{w}}" for name, w in cells) + "[/]"
    values = [f"{row['round']}", f"{row['rate']:.5g}",
              *((f"{row['rate_scale']:.4g}",) if trace else ()), f"{row['attainment']:.1%}",
              *(f"{row[k]:,.1f}" for k in ("ttft_ms", "tpot_ms", "e2el_ms")),
              "yes" if row["passed"] else "no", f"{row['wall_s']:.2f}"]
    line = " ".join(f"{v:>{w}}" for v, (_, w) in zip(values, cells, strict=True))
    return f"[green]{line}[/]" if row["passed"] else f"[red]{line}[/]"


@app.command()
def capacity(
    config: Annotated[Path | None, typer.Option("--config", "-c",
                                                help="YAML config (default: embedded).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a key: --set scheduler.name=vllm_v1 (repeatable).")] = None,
    slo: Annotated[str | None, typer.Option(
        "--slo", help="Limits in ms, e.g. ttft_ms=500,tpot_ms=50 (default: the config's).")
    ] = None,
    attainment: Annotated[float, typer.Option(help="Fraction A that must meet the SLOs.")
                          ] = 0.9,
    mode: Annotated[str, typer.Option(help="joint: a fraction A of requests meet every "
                                      "limit; percentile: each metric's p(100A) within its "
                                      "limit.")] = "joint",
    tolerance: Annotated[float, typer.Option(help="Relative width of the final bracket.")
                         ] = 0.02,
    workers: Annotated[int | None, typer.Option(help="Processes (default: CPU count).")
                       ] = None,
    per_round: Annotated[int | None, typer.Option(
        "--per-round", help="Rates probed per round (default: workers); the probes depend "
        "on it, never on --workers.")] = None,
    start_rate: Annotated[float | None, typer.Option(
        "--start-rate", help="First rate in req/s (default: the config's).")] = None,
    max_requests: Annotated[int | None, typer.Option(
        "--max-requests", help="Requests per probe (a trace: its first N).")] = None,
    window: Annotated[float | None, typer.Option(
        "--window", help="Trace only: replay its first N seconds (before scaling).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The highest request rate that meets the SLOs (seeded search: doubling, then
    k-section; probes in parallel processes) and the cost per million tokens there."""
    import math

    from infersim.capacity import find_capacity, parse_slo
    from infersim.simulator import SimConfig

    cfg = SimConfig.load(config, set_ or [])
    limits = parse_slo(slo) if slo is not None else None
    q = f"p{attainment * 100:g}"
    trace = cfg.workload.trace is not None
    shown: list[dict] = []

    def show(row: dict) -> None:  # the header waits for the first probe, after any error
        if not shown:
            out.print(f"[bold]{cfg.model}[/] on {cfg.replicas} x "
                      f"{cfg.device or cfg.device_file} (tp={cfg.placement.tp}), scheduler "
                      f"{cfg.scheduler.name}, seed {cfg.seed}; mode {mode}, attainment "
                      f"{attainment:g}, tolerance {tolerance:g}", highlight=False)
            out.print(_probe_line(None, q, trace), highlight=False)
        shown.append(row)
        out.print(_probe_line(row, q, trace), highlight=False)

    r = find_capacity(cfg, limits, attainment, mode, tolerance=tolerance, workers=workers,
                      per_round=per_round, start_rate=start_rate, max_requests=max_requests,
                      window_s=window, on_probe=None if as_json else show)
    if as_json:
        return _print_json(r.to_dict())
    met = ", ".join(f"{k} <= {v:g}" for k, v in r.slo.items())
    if r.max_rate > 0:
        best = r.best
        scale = f" (rate_scale {r.max_rate_scale:.4g})" if r.max_rate_scale else ""
        upper = (f"{r.hi_rate:.5g} req/s failed" if math.isfinite(r.hi_rate)
                 else "no failing rate found")
        out.print(f"[bold]max rate {r.max_rate:.5g} req/s[/]{scale} meets {met} "
                  f"({r.mode}, A = {r.attainment:g}); {upper}", highlight=False)
        out.print(f"at that rate: TTFT {q} {best['ttft_ms']:,.1f} ms, TPOT {q} "
                  f"{best['tpot_ms']:,.1f} ms, attainment {best['attainment']:.1%}, "
                  f"{r.output_tokens_per_s:,.0f} output tok/s", highlight=False)
        out.print(f"cost: {r.price.description} -> [bold]{r.usd_per_million_output_tokens:.4g}"
                  f" USD per million output tokens[/], {r.usd_per_million_tokens:.4g} USD per "
                  f"million tokens (input + output)", highlight=False)
    else:
        out.print(f"[bold red]no rate met {met}[/]", highlight=False)
    for note in r.notes:
        out.print(f"note: {note}", highlight=False)
    out.print(f"{len(r.probes)} probes in {r.rounds} rounds, {r.wall_s:.1f} s wall time; "
              f"lowest input grade {r.lowest_grade}", highlight=False)


# --- optimize tree (speculative decoding) ----------------------------------------------------
def _parse_accept(text: str) -> list[float]:
    from infersim.errors import ConfigError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError("--accept", text, "expected comma-separated probabilities, e.g. "
                          "0.55,0.15,0.07,0.04,0.02") from None


@optimize_app.command("tree")
def optimize_tree_cmd(
    accept: Annotated[str, typer.Option(
        "--accept", help="Positional acceptance p_1,p_2,...: P(the k-th ranked child is the one "
        "accepted); each in (0, 1], sum <= 1.")],
    nodes: Annotated[int, typer.Option(help="Tree size, root included (= verify q).", min=1)
                     ] = 32,
    depth: Annotated[int, typer.Option(help="Most drafts on one path (edges below the root).",
                                       min=0)] = 8,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Target model: also pick "
                                              "the size with the least time per token.")
                     ] = None,
    device: DeviceOpt = None,
    tp: Annotated[int, typer.Option(help="Tensor-parallel ranks of the target.", min=1)] = 1,
    batch: Annotated[int, typer.Option(help="Sequences verified together.", min=1)] = 1,
    context: Annotated[int, typer.Option(help="Cached tokens per sequence.", min=0)] = 1024,
    draft_model: Annotated[str | None, typer.Option(
        "--draft-model", help="Draft model (one device of the same kind); its passes count.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Sequoia's optimal draft tree: expected tokens per verify and the tree; with
    --model/--device, the size 1..nodes with the least time per token."""
    from infersim.errors import ConfigError
    from infersim.optimizer.trees import check_accept
    from infersim.optimizer.trees import optimize_tree as plan_tree

    values = check_accept(_parse_accept(accept), "--accept")
    if (model is None) != (device is None):
        raise ConfigError("--model" if model is None else "--device", None,
                          "size selection needs both --model and --device")
    if draft_model is not None and model is None:
        raise ConfigError("--draft-model", draft_model, "needs --model and --device")
    plan = plan_tree(values, nodes, depth, model=model, device=device, tp=tp, batch=batch,
                     context=context, draft_model=draft_model)
    if as_json:
        return _print_json(plan.to_dict())
    tree = plan.tree
    out.print(f"[bold]expected tokens per verify: {plan.expected_tokens:.4f}[/] (tree of "
              f"{tree.size} nodes incl. the root = verify q, depth {tree.depth} <= {depth}; "
              f"p = {', '.join(f'{p:g}' for p in values)})", highlight=False)
    out.print("children of each node, level by level (breadth-first, rank order):",
              highlight=False)
    out.print(tree.render(), highlight=False)
    reach = " ".join(f"{a:.3f}" for a in tree.position_acceptance(values))
    out.print(f"P(accepted path reaches depth t), t = 1..{tree.depth}: {reach}", highlight=False)
    if plan.sizes is None:
        return
    s, choice = plan.setup, plan.sizes
    best = choice.best
    shown = {o.nodes for o in choice.options if o.nodes & (o.nodes - 1) == 0}
    shown |= {best.nodes, choice.options[-1].nodes}
    table = Table("nodes", "depth", "tokens", "verify ms", "draft ms", "ms/token",
                  "tokens/s", "", title=f"{s['model']} on {tp} x {s['device']}, batch {batch}, "
                  f"context {context}" + (f", drafter {draft_model}" if draft_model else ""))
    for o in choice.options:
        if o.nodes in shown:
            table.add_row(str(o.nodes), str(o.depth), f"{o.expected_tokens:.3f}",
                          f"{o.verify_s * 1e3:.3f}", f"{o.draft_s * 1e3:.3f}",
                          f"{o.time_per_token_s * 1e3:.4f}", f"{1 / o.time_per_token_s:,.0f}",
                          "best" if o is best else "")
    out.print(table)
    out.print(f"best size {best.nodes} nodes (depth {best.depth}): {best.expected_tokens:.3f} "
              f"tokens per verify, {best.time_per_token_s * 1e3:.4f} ms per token, "
              f"{choice.speedup:.2f}x plain decoding; lowest input grade {s['grade']}",
              highlight=False)


# --- optimize schedule (CP-SAT) ------------------------------------------------------------
@optimize_app.command("schedule")
def optimize_schedule_cmd(
    config: Annotated[Path | None, typer.Option("--config", "-c",
                                                help="YAML config (default: embedded).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a key: --set scheduler.num_gpu_blocks=64 (repeatable).")] = None,
    requests: Annotated[int, typer.Option("--requests", "-n", min=1,
                                          help="The first N requests of the workload.")] = 30,
    objective: Annotated[str, typer.Option(
        help="latency (sum of end-to-end), makespan, cost (busy device time) or slo "
        "(requests missing the config's SLOs).")] = "latency",
    preemption: Annotated[str, typer.Option(
        help="on: the optimum may drop a request's KV cache and recompute it.")] = "off",
    time_limit: Annotated[float, typer.Option("--time-limit", min=0.1,
                                              help="Time limit of the solve, all phases "
                                              "(s).")] = 60.0,
    workers: Annotated[int, typer.Option(min=1, help="CP-SAT workers.")] = 2,
    seed: Annotated[int, typer.Option(min=0, help="CP-SAT random seed.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """The optimal schedule of the first N requests (CP-SAT, warm-started from the best
    scheduler; for the latency of a burst, also the trajectory relaxation's bound and
    schedules) and its bound, next to every registered scheduler on the same requests."""
    from infersim.errors import ConfigError
    from infersim.optimizer.schedule import optimize_schedule

    if preemption not in ("on", "off"):
        raise ConfigError("--preemption", preemption, "allowed: on, off")
    err = Console(stderr=True)
    report = optimize_schedule(config, requests, objective, preemption=preemption == "on",
                               time_limit_s=time_limit, num_workers=workers, seed=seed,
                               overrides=set_ or [],
                               progress=None if as_json else lambda m: err.print(m))
    if as_json:
        return _print_json(report.to_dict())
    res, fit = report.result, report.envelope.fit
    unit = res.unit
    out.print(report.description, highlight=False)
    out.print(f"step envelope: {len(report.envelope.pieces)} linear pieces below the cost "
              f"model, error mean {fit.mean_rel_error:.1%}, max {fit.max_rel_error:.1%} on "
              f"{fit.samples:,} shapes; above it on {fit.holdout_violations} of "
              f"{fit.holdout_samples:,} held-out shapes and {report.envelope_violations} "
              "simulated steps", highlight=False)
    out.print(f"[bold]{res.summary()}[/]", highlight=False)
    out.print(f"replay of the optimum: {report.replay_linearized:.6g} {unit} under the "
              f"envelope (solver {res.incumbent:.6g}, {report.replay_error:.3%} apart), "
              f"{report.optimum:.6g} {unit} under the cost model "
              f"({report.linearization_gap:+.2%} linearisation)", highlight=False)
    table = Table("schedule", f"{objective} ({unit})", "above bound", "above optimum",
                  "under envelope", "steps", "preemptions")
    for row in report.table().to_dict(orient="records"):
        def pct(v):
            return "-" if v is None or v != v else f"{v:+.1%}"

        value = row["value"]
        table.add_row(row["scheduler"], "-" if value != value else f"{value:.6g}",
                      pct(row["above_bound"]), pct(row["above_optimum"]),
                      f"{row['value_linearized']:.6g}" if row["value_linearized"] ==
                      row["value_linearized"] else "-",
                      "-" if row["steps"] is None or row["steps"] != row["steps"]
                      else f"{int(row['steps'])}",
                      "-" if row["preemptions"] is None or row["preemptions"] !=
                      row["preemptions"] else f"{int(row['preemptions'])}")
    out.print(table)
    for row in report.runs:
        if row.error:
            out.print(f"note: {row.name} failed: {row.error}", highlight=False)


def main() -> None:
    """Entry point: user errors print one line and exit 2; bugs keep their traceback."""
    try:
        app()
    except InfersimError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
