"""`imgstream bench ...`: benchmarks that print tables and ratios against baselines measured in the same run."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (tables + JSON; never timed assertions in tests).")


@bench_app.callback()
def _bench() -> None:
    """Benchmarks (tables + JSON; never timed assertions in tests)."""  # keeps `bench` a group of commands


@bench_app.command("preprocess")
def preprocess(
    check: bool = typer.Option(False, "--check", help="Exit 1 when a target is missed (release gating)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the full report here."),
    seconds: float = typer.Option(0.5, help="CPU seconds per method, photo group and round."),
    rounds: int = typer.Option(3, help="Rounds; the methods' order rotates each round."),
    scaling_seconds: float = typer.Option(2.0, help="Wall seconds per 1-/2-worker scaling run."),
    store: str = typer.Option("s3", help="Where 'fetch included' reads from: s3 (the local stack) or file."),
    tiny: bool = typer.Option(False, "--tiny", help="Small synthetic photos, seconds-long: a smoke test."),
) -> None:
    """JPEG -> 224x224 tensor: this engine vs Pillow, OpenCV and libjpeg-turbo in C, same photos, one run."""
    from streaming.bench import photos as bench_photos
    from streaming.bench import preprocess as bench
    from streaming.bench import report as bench_report
    from streaming.bench import stores

    if store not in ("s3", "file"):
        raise typer.BadParameter("--store must be s3 or file")

    def log(message: str) -> None:
        typer.echo(message, err=True)

    if tiny:
        photos = bench_photos.tiny_photos()
    else:
        from streaming.stack.layout import StackLayout
        from streaming.stack.samples import ensure_samples

        samples = StackLayout.from_env().samples_dir
        ensure_samples(samples)
        photos = bench_photos.sample_photos(samples / "mate-backgrounds")
    make_store = stores.file_store if store == "file" else lambda photos, _folder: stores.s3_store(photos)
    try:
        result = bench.run(photos, make_store, seconds=seconds, rounds=rounds,
                           scaling_seconds=scaling_seconds, log=log)
    except RuntimeError as exc:
        log(f"error: {exc}")
        raise typer.Exit(2)
    result["command"] = "imgstream bench " + " ".join(sys.argv[sys.argv.index("preprocess"):]) \
        if "preprocess" in sys.argv else "imgstream bench preprocess"
    result["targets"] = bench_report.targets(result)
    typer.echo(bench_report.table(result))
    typer.echo("")
    typer.echo(bench_report.LEGEND)
    typer.echo("")
    for target in result["targets"]:
        typer.echo(f"{'met   ' if target['met'] else 'MISSED'} {target['target']}: {target['value']}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {json_path}")
    if check and not all(t["met"] for t in result["targets"]):
        raise typer.Exit(1)
