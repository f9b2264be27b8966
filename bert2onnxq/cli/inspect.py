"""bert2onnxq inspect"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .app import Command, key_value, main, status

out = Console(width=160)  # wide tables stay readable when piped


@main.command(cls=Command)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--runtime/--no-runtime", default=True, show_default=True,
              help="Also build an ONNX Runtime session and report the fusions and kernels it applies.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Provider whose session optimizations --runtime reports.")
@click.option("--session-config", multiple=True, metavar="KEY=VALUE", help="ONNX Runtime session config entry (repeatable).")
@click.option("--plan", "plan_only", is_flag=True,
              help="Print only the plan stored in the file (JSON, as --plan-out writes it; convert --plan re-applies it).")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def inspect(model, runtime, device, session_config, plan_only, as_json):
    """Show what a BERT ONNX file holds and what ONNX Runtime runs for it.

    \b
    Per encoder layer and role: bits, container type, granularity, group size, OCS splits and
    the kernel the plan chose; sizes of embeddings / encoder / rest, actual vs ideal; the plan
    stored in the metadata; and, after ONNX Runtime's session optimizations, which fusions
    (Attention, SkipLayerNormalization, BiasGelu, MatMulNBits, ...) apply and which kernel each
    linear layer runs on. Works on FP32 exports and ONNX Runtime quantizer outputs too.
    \b
    Examples:
      bert2onnxq inspect out/lq8/model.onnx
      bert2onnxq inspect out/q4/model.onnx --no-runtime --json
      bert2onnxq inspect out/ort-dynamic.onnx
      bert2onnxq inspect out/q4/model.onnx --plan > plan.json
    """
    from ..inspect import check_inspectable, inspect_model, stored_plan

    check_inspectable(model)
    if plan_only:
        click.echo(stored_plan(model))
        return
    config = dict(key_value(item) for item in session_config)
    with status("inspecting ..."):
        result = inspect_model(model, runtime=runtime, device=device, config=config)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    print_inspection(result)


def print_inspection(r: dict) -> None:
    out.print(f"[bold]{r['path']}[/]  {r['bytes'] / 2**20:.2f} MiB, opset {r['opset']}")
    if r.get("plan_summary"):
        p = r["plan"]
        out.print(f"plan: {r['plan_summary']}")
        out.print(f"  target {p['target']}; kernels {p['kernels']}; activations {p['activations']['bits'] or 'fp32'} "
                  f"{p['activations']['mode']}" + (f"; OCS +{p['ocs']['channels_added']} channels, "
                                                   f"{p['ocs']['folded_tensors']} folded" if p["ocs"]["channels_added"] else ""))
        rounding = p.get("rounding", {})
        if rounding.get("method", "nearest") != "nearest":
            out.print(f"  rounding {rounding['method']}: {rounding.get('samples')} calibration samples "
                      f"({rounding.get('tokens')} tokens; {rounding.get('draw', 'first rows of the train file')}), damp {rounding.get('damp')}, block {rounding.get('block')}, "
                      f"act order {rounding.get('act_order')}, grid {rounding.get('grid', 'fixed')}; out err = ||X(W - Q)||^2 / ||XW||^2, nearest -> {rounding['method']} "
                      "(s: on the searched ranges)")
    else:
        out.print("plan: none in the metadata (not written by bert2onnxq convert)")
    errors = any(w.get("out_err") is not None for w in r["weights"])
    table = Table(title="weights", title_justify="left")
    columns = ["layer", "role", "bits", "container", "granularity", "group", "OCS splits", "kernel", "KiB", "vs ideal"]
    for col in columns + (["out err"] if errors else []):
        table.add_column(col, justify="left" if col in ("role", "container", "granularity", "kernel") else "right")
    for w in r["weights"]:
        ocs = f"{w['ocs_splits']} ({w['ocs_form']})" if w["ocs_splits"] else "-"
        cells = ["emb" if w["layer"] is None else str(w["layer"]), w["role"] or w["name"], str(w["bits"]),
                 w["container"], w["granularity"], str(w["group_size"] or "-"), ocs, w["kernel"] or "-",
                 f"{w['bytes'] / 1024:.0f}", f"{w['bytes'] / w['ideal_bytes']:.3f}" if w["ideal_bytes"] else "-"]
        if errors:
            cells.append(f"{w['out_err_nearest']:.4f} -> {w['out_err']:.4f}" + (" s" if w.get("grid") == "searched" else "")
                         if w.get("out_err") is not None else "-")
        table.add_row(*cells)
    out.print(table)
    s = r["sizes"]
    sizes = Table(title="size", title_justify="left")
    for col in ("part", "MiB", "ideal MiB", "actual / ideal"):
        sizes.add_column(col, justify="left" if col == "part" else "right")
    for part, v in s["parts"].items():
        sizes.add_row(part, f"{v['bytes'] / 2**20:.2f}", f"{v['ideal_bytes'] / 2**20:.2f}",
                      f"{v['vs_ideal']:.3f}" if v["vs_ideal"] else "-")
    sizes.add_row("graph + metadata", f"{s['graph_bytes'] / 2**20:.2f}", f"{s['graph_bytes'] / 2**20:.2f}", "1.000")
    sizes.add_row("file", f"{s['file_bytes'] / 2**20:.2f}", f"{s['ideal_bytes'] / 2**20:.2f}", f"{s['file_vs_ideal']:.3f}",
                  end_section=True)
    out.print(sizes)
    if "runtime" in r:
        rt = r["runtime"]
        out.print(f"ONNX Runtime {rt['session']['onnxruntime']} ({rt['providers'][0]}, ORT_ENABLE_ALL) runs:")
        out.print("  fusions: " + (", ".join(f"{k} x{v}" for k, v in rt["fusions"].items()) or "none"))
        nb = "; ".join(f"MatMulNBits {m['bits']}-bit block {m['block_size']} accuracy level {m['accuracy_level']}"
                       for m in rt["matmulnbits"])
        out.print("  linear layers: " + (", ".join(f"{v} {k}" for k, v in rt["linear_kernels"].items()) or "none")
                  + (f" ({nb})" if nb else ""))
        out.print(f"  left at run time: {rt['dequantize_linear_at_run_time']} DequantizeLinear, "
                  f"{rt['float_matmul_on_dequantized_weights']} float MatMul on dequantized weights, "
                  f"{rt['dynamic_quantize_linear']} DynamicQuantizeLinear, {rt['per_token_quantizers']} per-token "
                  f"QuantizeLinear, {rt['ocs_gathers']} OCS Gather")
