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
    note = cm.memory_note()
    if note:
        out.print(f"[yellow]note:[/] {note}")


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


def main() -> None:
    """Entry point: user errors print one line and exit 2; bugs keep their traceback."""
    try:
        app()
    except InfersimError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
