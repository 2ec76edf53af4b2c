"""`imgstream models ...`: build, evaluate, import and list the Triton models."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from streaming.stack.layout import StackLayout

models_app = typer.Typer(no_args_is_help=True, help="The Triton model repositories.")


def _variants(text: str | None, default: tuple):
    """The variants named in `--variants` (default: `default`); an unknown name is a usage error."""
    from triton_models import build

    try:
        return build.parse_variants(text, default)
    except KeyError as exc:
        raise typer.BadParameter(exc.args[0], param_hint="--variants") from None


def _batches(text: str) -> tuple[int, ...]:
    """`--batches` 1,8,32 as numbers."""
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"comma-separated whole numbers, not {text!r}", param_hint="--batches") from None


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
                               variants=_variants(variants, LOCAL_VARIANTS))
    elif target == "gpu":
        if out is None:
            raise typer.BadParameter("--target gpu needs --out DIR", param_hint="--out")
        repo = build.build_gpu_repository(out, store=store, gpus=gpus, instances_per_gpu=instances_per_gpu,
                                          max_batch_size=max_batch,
                                          variants=_variants(variants, ALL_VARIANTS),
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
        variants=_variants(variants, ALL_VARIANTS), batches=_batches(batches), concurrency=concurrency,
        rounds=rounds, seconds=seconds, triton=not no_triton)
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


TRITON_TIMEOUT_S = 5.0


@contextmanager
def _triton(layout: StackLayout) -> Iterator:
    """The local Triton's gRPC client, or None when it does not answer; closed on leaving."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(layout.triton_grpc)
    try:
        try:
            client.is_server_live(client_timeout=TRITON_TIMEOUT_S)
        except InferenceServerException:
            yield None
        else:
            yield client
    finally:
        client.close()


def _s3_photos(layout: StackLayout, uri: str, folder: Path) -> Path:
    """Download every object under s3://bucket/prefix/ of the local stack's S3 into ``folder``."""
    from streaming.stack import s3

    bucket, _, prefix = uri[len("s3://"):].partition("/")
    client = s3.s3_client(layout)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            client.download_file(bucket, obj["Key"], str(folder / Path(obj["Key"]).name))
    return folder


@models_app.command("import")
def models_import(
    model: Path = typer.Argument(..., exists=True, dir_okay=False, help="the ONNX file"),
    name: str = typer.Option(..., help="the Triton model name"),
    contract: Path = typer.Option(..., exists=True, dir_okay=False, help="the contract (TOML)"),
    labels: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="classes: one label a line"),
    calibrate: Optional[str] = typer.Option(None, help="a folder of photos (or s3://bucket/prefix/ of the local "
                                                       "stack): also write NAME_int8, calibrated on them"),
    version: Optional[int] = typer.Option(None, help="the version to write (default: the next one)"),
    gpu_out: Optional[Path] = typer.Option(None, help="also write the GPU entries (onnxruntime+TensorRT, _plan) here"),
    gpus: int = typer.Option(1, help="gpu: GPU count (one instance group each)"),
    instances_per_gpu: int = typer.Option(1, help="gpu: instances on each GPU"),
) -> None:
    """Validate, wrap and write an ONNX image classifier or embedding model into the local repository."""
    import tempfile

    from streaming.contract import ContractError, ModelContract
    from triton_models import build, contract_images, photos
    from triton_models.import_model import import_model
    from triton_models.onnx_validate import ModelImportError

    layout = StackLayout.from_env()
    with tempfile.TemporaryDirectory(prefix="imgstream-calibration-") as tmp:
        try:
            model_contract = ModelContract.from_toml(contract)
            calibration: list[Path] = []
            if calibrate:
                folder = _s3_photos(layout, calibrate, Path(tmp)) if calibrate.startswith("s3://") else Path(calibrate)
                if not folder.is_dir():
                    raise ModelImportError("calibrate", f"{folder} is not a folder")
                calibration = contract_images.image_files(folder)
                if not calibration:
                    raise ModelImportError("calibrate", f"no images in {calibrate}")
            if calibration:
                check_photos = calibration
            else:
                store = build.store_in(layout.root)
                photos.ensure_photos(store.photos_dir)
                check_photos = [p.path for p in photos.calibration_photos(store.photos_dir)]
            result = import_model(model, name=name, contract=model_contract, repository=layout.model_repository,
                                  photos=check_photos, labels=labels, version=version, calibrate=calibration,
                                  gpu_out=gpu_out, gpus=gpus, instances_per_gpu=instances_per_gpu)
        except (ContractError, ModelImportError) as exc:
            typer.echo(f"imgstream: cannot import {model}: {exc}", err=True)
            raise typer.Exit(2) from None
    for line in result.lines():
        typer.echo(line)
    from tritonclient.utils import InferenceServerException

    with _triton(layout) as client:
        if client is None:
            typer.echo(f"Triton ({layout.triton_grpc}) is not running: the model loads at the next "
                       "`imgstream stack up`")
            return
        for path in result.written:
            if path.parent == layout.model_repository:
                try:
                    client.load_model(path.name)
                except InferenceServerException as exc:  # e.g. a Triton not in explicit model-control mode
                    typer.echo(f"Triton {layout.triton_grpc} did not load {path.name}: {exc.message()}; "
                               "it loads at the next `imgstream stack up`", err=True)
                    raise typer.Exit(1) from None
                typer.echo(f"loaded {path.name} (version {result.version}) into Triton {layout.triton_grpc}")


@models_app.command("example")
def models_example(
    name: str = typer.Argument(..., help="lite1_torchvision (classifier), lite0_embedding (embedding) or "
                                         "rate_probe (inference almost free: the job at GPU rates)"),
    out: Path = typer.Option(..., help="where to write the ONNX file"),
) -> None:
    """Write an example ONNX model (exported the way PyTorch users do) and name its contract."""
    from triton_models import build, user_models

    if name not in user_models.NAMES:
        raise typer.BadParameter(f"one of {', '.join(user_models.NAMES)}", param_hint="NAME")
    path = user_models.export_example(name, out, build.store_in(StackLayout.from_env().root))
    typer.echo(f"wrote {path}; its contract: {user_models.contract_path(name)}")


def _contract_summary(contract_json: str) -> dict:
    from streaming.contract import ContractError, ModelContract

    try:
        c = ModelContract.from_json(contract_json)
    except ContractError as exc:
        return {"error": str(exc)}
    out = c.output
    return {"size": c.resize.size, "resize": c.resize.mode, "kind": out.kind,
            **({"top_k": out.top_k, "num_classes": out.num_classes} if out.kind == "classes" else {"dim": out.dim})}


def model_table(index: list[dict], contracts: dict[str, str]) -> list[dict]:
    """One row per model of Triton's repository index: state, ready versions, contract, variants
    (the other models whose name is this one's plus "_<suffix>")."""
    names = sorted({m["name"] for m in index})
    rows = []
    for name in names:
        entries = [m for m in index if m["name"] == name]
        ready = sorted((m.get("version", "") for m in entries if m.get("state") == "READY"), key=lambda v: int(v or 0))
        states = sorted({m.get("state") or "UNAVAILABLE" for m in entries})
        rows.append({"name": name, "state": "READY" if ready else "/".join(states), "ready_versions": ready,
                     "contract": _contract_summary(contracts[name]) if name in contracts else None,
                     "variants": [n for n in names if n.startswith(name + "_")]})
    return rows


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """The live local Triton's models: state, ready versions, contract and variants."""
    from google.protobuf.json_format import MessageToDict

    from streaming.contract import CONTRACT_PARAMETER

    layout = StackLayout.from_env()
    with _triton(layout) as client:
        if client is None:
            typer.echo(f"imgstream: Triton ({layout.triton_grpc}) is not running; start it with `imgstream stack up`",
                       err=True)
            raise typer.Exit(1)
        index = [MessageToDict(m, preserving_proto_field_name=True)
                 for m in client.get_model_repository_index().models]
        contracts = {}
        for name in sorted({m["name"] for m in index if m.get("state") == "READY"}):
            params = client.get_model_config(name).config.parameters
            if CONTRACT_PARAMETER in params:
                contracts[name] = params[CONTRACT_PARAMETER].string_value
    rows = model_table(index, contracts)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        c = row["contract"] or {}
        what = ("no contract" if not c else c.get("error") or
                f"{c['size']} {c['resize']}, " + (f"classes top_k {c['top_k']} of {c['num_classes']}"
                                                  if c["kind"] == "classes" else f"embedding dim {c['dim']}"))
        versions = ",".join(row["ready_versions"]) or "-"
        variants = f"  variants: {', '.join(row['variants'])}" if row["variants"] else ""
        typer.echo(f"{row['name']:32s} {row['state']:11s} v{versions:6s} {what}{variants}")
