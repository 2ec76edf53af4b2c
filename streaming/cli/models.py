"""`imgstream models ...`: build and evaluate the Triton model repositories."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from streaming.stack.layout import StackLayout

models_app = typer.Typer(no_args_is_help=True, help="The Triton model repositories.")


@models_app.command("build")
def models_build(
    target: str = typer.Option("cpu", help="cpu: the local stack's repository; gpu: production (needs --out)"),
    out: Optional[Path] = typer.Option(None, help="repository folder (cpu default: the stack's repository)"),
    instances: int = typer.Option(1, help="cpu: python backend instances"),
    max_batch: int = typer.Option(32, help="max_batch_size"),
    variants: Optional[str] = typer.Option(None, help="comma-separated model names (default: all for the target)"),
    gpus: int = typer.Option(1, help="gpu: GPU count (one KIND_GPU instance group per GPU)"),
    instances_per_gpu: int = typer.Option(1, help="gpu: instances on each GPU"),
    engine_cache_dir: str = typer.Option("/var/cache/triton-trt", help="gpu: TensorRT engine cache folder"),
    plans: bool = typer.Option(True, help="gpu: also write the tensorrt_plan models (built by build_trt_plan.sh)"),
) -> None:
    """Export the models to ONNX (quantize INT8) and write a Triton model repository."""
    from triton_models import build
    from triton_models.variants import ALL_VARIANTS, LOCAL_VARIANTS

    layout = StackLayout.from_env()
    store = build.store_in(layout.root)
    if target == "cpu":
        repo = out or layout.model_repository
        build.build_repository(repo, store=store, instances=instances, max_batch_size=max_batch,
                               variants=build.parse_variants(variants, LOCAL_VARIANTS))
    elif target == "gpu":
        if out is None:
            raise typer.BadParameter("--target gpu needs --out DIR", param_hint="--out")
        repo = build.build_gpu_repository(out, store=store, gpus=gpus, instances_per_gpu=instances_per_gpu,
                                          max_batch_size=max_batch,
                                          variants=build.parse_variants(variants, ALL_VARIANTS),
                                          plans=plans, engine_cache_dir=engine_cache_dir)
    else:
        raise typer.BadParameter("cpu or gpu", param_hint="--target")
    typer.echo(repo)


@models_app.command("eval")
def models_eval(
    check: bool = typer.Option(False, "--check", help="exit 1 when a target (INT8 agreement, INT8 speed-up) is missed"),
    variants: Optional[str] = typer.Option(None, help="comma-separated model names (default: every variant)"),
    batches: str = typer.Option("1,8,32", help="batch sizes for the Triton load"),
    concurrency: int = typer.Option(2, help="requests in flight"),
    rounds: int = typer.Option(5, help="interleaved rounds per batch size"),
    seconds: float = typer.Option(1.5, help="seconds per model per round"),
    no_triton: bool = typer.Option(False, "--no-triton", help="accuracy only, no Triton load"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="JSON report (default .stack/results/models-eval.json)"),
) -> None:
    """Top-1/top-5 agreement with FP32 on every real photo, and Triton latency/throughput per variant."""
    from streaming.bench.side_triton import eval_triton
    from streaming.stack.samples import ensure_samples, sample_folders
    from triton_models import build, eval_report
    from triton_models.variants import ALL_VARIANTS

    layout = StackLayout.from_env()
    options = eval_report.EvalOptions(
        variants=build.parse_variants(variants, ALL_VARIANTS),
        batches=tuple(int(b) for b in batches.split(",")), concurrency=concurrency, rounds=rounds,
        seconds=seconds, triton=not no_triton)
    ensure_samples(layout.samples_dir)
    report = eval_report.run(build.store_in(layout.root), layout.root / "eval" / "repository", options,
                             sample_folders=sample_folders(layout.samples_dir),
                             serve=lambda repo: eval_triton(repo, layout), log=typer.echo)
    typer.echo("")
    typer.echo(eval_report.format_tables(report))
    path = eval_report.write_json(report, json_out or layout.root / "results" / "models-eval.json")
    typer.echo(f"\nJSON: {path}")
    for failure in report["failures"]:
        typer.echo(f"TARGET MISSED: {failure}", err=True)
    if check and report["failures"]:
        raise typer.Exit(1)
