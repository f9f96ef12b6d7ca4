import json
from pathlib import Path
from typing import List, Optional

import typer

from ..app import app, console, guarded, reporter


@app.command("bench")
@guarded
def bench(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    preset: Optional[List[str]] = typer.Option(None, "--preset", help="Preset(s) to measure (default: tiny, cpu, paper)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
    precision: str = typer.Option("auto", "--precision", help="auto, bf16 or fp32."),
    seconds: float = typer.Option(6.0, "--seconds", min=0.5, help="Time spent measuring each training configuration."),
    plain: bool = typer.Option(True, "--plain/--no-plain", help="Also measure the plain (nerf-pytorch style) reference step."),
    memory: bool = typer.Option(False, "--memory", help="Also measure peak memory of real training runs at 64 px and 256 px."),
    micro_batch: Optional[int] = typer.Option(None, "--micro-batch", min=0,
                                              help="Rays per forward/backward pass (default: each preset's own; 0: whole step)."),
    bake: bool = typer.Option(True, "--bake/--no-bake", help="Also measure baked rendering (bake time, ms per frame, "
                                                              "PSNR against exact renders) of each preset's random network."),
    model: Optional[Path] = typer.Option(None, "--model", help="Also measure exact and baked rendering of this trained run."),
    settings: Optional[List[str]] = typer.Option(None, "--set", help="SECTION.KEY=VALUE applied to every preset measured, "
                                                                      "as `train --set` (e.g. --set render.n_coarse=32); repeatable."),
):
    """Measure this machine: matmul peak, training samples/s and render ms per 128x128 frame per preset."""
    from ..bench import DEFAULT_PRESETS, preset_with_settings, run_bench, to_json
    from .train_cmd import parse_settings

    values = parse_settings(settings or [])
    for name in preset or DEFAULT_PRESETS:
        preset_with_settings(name, values)      # an unknown preset or setting fails before minutes of measuring
    if model is not None:
        from ..folders import run_folder

        run_folder(model)                 # a wrong folder fails before minutes of measuring
    result = run_bench(list(preset) if preset else None, device, precision, seconds, plain, memory,
                       None if json_out else reporter(), micro_batch=micro_batch, baked=bake, model_dir=model,
                       settings=values)
    if json_out:
        print(to_json(result))
        return
    from rich.table import Table

    console.print(f"[bold]{result['device']}[/]  torch {result['torch']}, {result['threads']} threads, "
                  f"training precision {result['precision']}, OpenMP wait policy {result['omp_wait_policy'] or 'default'}")
    console.print(f"matmul peak: fp32 {result['matmul_gflops']['fp32']:,.0f} GFLOP/s, "
                  f"bf16 {result['matmul_gflops']['bf16']:,.0f} GFLOP/s")
    ap = result.get("auto_precision")
    if ap:
        console.print(f"auto precision: bf16 autocast {ap['speedup']:.2f}x as fast as fp32 for the training network "
                      f"({ap['source']}; {ap['speedup_now']:.2f}x now), so {'bf16' if ap['bf16'] else 'fp32'} "
                      f"(bf16 needs >= {ap['bf16_min_speedup']}x; delete {ap['cache']} to measure again)",
                      markup=False, highlight=False)
    table = Table(title="training and rendering per preset" +
                  "".join(f", {k}={json.dumps(v)}" for k, v in result["settings"].items()))
    for col in ("preset", "sampler", "main evals/ray", "train rays/s", "samples/s", "plain rays/s (128/ray)",
                "rays/s vs plain", "% of peak", "step ms", "render ms/frame (128²)", "full training (h)"):
        table.add_column(col, justify="right")
    for name, e in result["presets"].items():
        prop = f" + {'/'.join(map(str, e['proposal_evals_per_ray']))} proposal" if e["proposal_evals_per_ray"] else ""
        table.add_row(name, e["sampler"], f"{e['main_field_evals_per_ray']}{prop}", f"{e['train_rays_per_s']:,}",
                      f"{e['train_samples_per_s']:,}", f"{e.get('plain_rays_per_s', 0):,.0f}",
                      f"{e.get('rays_speedup_vs_plain', float('nan')):.1f}x", f"{100 * e['fraction_of_peak']:.0f}%",
                      f"{e['train_step_ms']:.0f}", f"{e['render_ms_per_frame_128']:.0f}",
                      f"{e['estimated_training_hours']:.1f}")
    console.print(table)
    if bake:
        btable = Table(title="baked rendering (random networks: a fog filling the sphere, nothing to skip)")
        for col in ("preset", "bake s", "grid", "blocks", "MB", "baked ms/frame (128²)", "exact ms/frame", "PSNR vs exact"):
            btable.add_column(col, justify="right")
        rows = [(n, e) for n, e in result["presets"].items()]
        if "model" in result:
            rows.append((f"{result['model']['preset']} (--model)", result["model"]))
        for name, e in rows:
            btable.add_row(name, f"{e['bake_seconds']:.1f}", f"{e['bake_resolution']}³",
                           f"{e['bake_blocks']}/{e['bake_blocks_in_sphere']}", f"{e['bake_mb']:.0f}",
                           f"{e['baked_ms_per_frame_128']:.0f}", f"{e['render_ms_per_frame_128']:.0f}",
                           f"{e['baked_vs_exact_psnr']:.1f} dB")
        console.print(btable)
    if "memory" in result:
        mem = ", ".join(f"{res} px: {v['peak_rss_mb']:.0f} MB" for res, v in result["memory"].items())
        console.print(f"peak training memory (same batch): {mem}")
    console.print("samples/s counts main-field evaluations. The plain reference runs the whole network, "
                  "written the nerf-pytorch way, at all 128 samples of every ray (the paper's sampling), in fp32. "
                  "% of peak counts our networks' FLOPs (forward + backward = 3x forward) against the measured "
                  "matmul peak of the training precision.")
