"""`imgstream bench ...`: benchmarks that print tables and ratios against baselines measured in the same run."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from streaming.bench.workloads import MAX_FILES, MAX_OBJECT_BYTES

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
    result["command"] = _command("preprocess")
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


@bench_app.command("e2e")
def e2e(
    check: bool = typer.Option(False, "--check", help="Exit 1 when a target is missed (release gating)."),
    quick: bool = typer.Option(False, "--quick", help="Shorter runs (~9 min instead of ~25; a 2-min memory run)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report here (default: in --out)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the JSON and the PNG [.stack/results]."),
    setting: Optional[List[str]] = typer.Option(None, "--set", help="KEY=VALUE job config override (all jobs)."),
    smoke: bool = typer.Option(False, "--smoke", hidden=True, help="Seconds-long runs: a test of the shape only."),
    report_path: Optional[Path] = typer.Option(None, "--report", exists=True, dir_okay=False,
                                               help="Print the tables of a saved JSON report; run nothing."),
    photos: Optional[List[str]] = typer.Option(
        None, "--photos", help="Workload: large, small, a folder of images or s3://bucket/prefix/ on the stack's "
        "S3 (repeatable; the first gets every run, the others the main job). Default: large and small."),
    max_files: int = typer.Option(MAX_FILES, "--max-files", help="At most this many photos from a folder or prefix."),
    max_object_bytes: int = typer.Option(MAX_OBJECT_BYTES, "--max-object-bytes",
                                         help="Skip photos larger than this."),
) -> None:
    """The pipeline end to end on the local stack vs the work alone (ideal) and the naive design, one run,
    on two workloads by default: large photos (1.3-12 MP) and small ones (~0.2 MP)."""
    import signal
    import time

    from streaming.bench import e2e as bench
    from streaming.bench import e2e_report, plot

    def log(message: str) -> None:
        typer.echo(message, err=True)

    if report_path is not None:
        report = e2e_report.complete(json.loads(report_path.read_text()))
        _print_e2e(report)
        if check and not all(t["met"] for t in report["targets"]):
            raise typer.Exit(1)
        return

    layout, prepared, base = _stack_and_config(setting)
    mode = "smoke" if smoke else "quick" if quick else "full"
    chosen = _workloads(layout, photos, smoke, max_files, max_object_bytes)

    def interrupted(signum, _frame):  # a killed run still cancels its job and stops its processes
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    report = bench.run(layout, base, prepared.connector_jar, bench.MODES[mode], log=log, workloads=chosen)
    report["command"] = _command("e2e", f"imgstream bench e2e{' --quick' if quick else ''}")
    report["overrides"] = list(setting or [])
    e2e_report.complete(report)
    folder = out or layout.root / "results"
    stem = f"e2e-{mode}-{time.strftime('%Y%m%d-%H%M%S')}"
    if plot.have_matplotlib():
        report["plot"] = str(plot.plot(report, folder / f"{stem}.png"))
    else:
        report["plot"] = None
        log("no PNG: matplotlib is not installed (pip install 'imgstream[bench]')")
    path = json_path or folder / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    _print_e2e(report)
    log(f"wrote {path}" + (f" and {report['plot']}" if report["plot"] else ""))
    if check and not all(t["met"] for t in report["targets"]):
        raise typer.Exit(1)


@bench_app.command("profile")
def profile(
    photos: str = typer.Option("small", "--photos", help="Workload: small, large, a folder or s3://bucket/prefix/."),
    seconds: float = typer.Option(20.0, help="How long py-spy samples the worker."),
    fraction: float = typer.Option(0.5, help="Steady load while sampling, as a fraction of the burst's images/s."),
    sample_hz: int = typer.Option(100, "--rate-hz", help="py-spy samples per second."),
    setting: Optional[List[str]] = typer.Option(None, "--set", help="KEY=VALUE job config override."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the profile's files [.stack/results]."),
    py_spy: Optional[str] = typer.Option(None, "--py-spy", help="The py-spy executable (default: beside python, else on PATH)."),
    max_files: int = typer.Option(MAX_FILES, "--max-files", help="At most this many photos from a folder or prefix."),
    max_object_bytes: int = typer.Option(MAX_OBJECT_BYTES, "--max-object-bytes", help="Skip photos larger than this."),
) -> None:
    """py-spy on the job's Python worker under a steady load: where its samples go, by stage."""
    from streaming.bench import profile as bench

    def log(message: str) -> None:
        typer.echo(message, err=True)

    executable = bench.find_py_spy(py_spy)
    if executable is None:
        log(f"error: py-spy not found: pip install 'imgstream[bench]' (py-spy=={bench.PY_SPY_VERSION}) or --py-spy PATH")
        raise typer.Exit(2)
    if seconds < 1 or not 0 < fraction <= 1:
        raise typer.BadParameter("--seconds must be at least 1 and --fraction in (0, 1]")
    layout, prepared, base = _stack_and_config(setting)
    (workload,) = _workloads(layout, [photos], False, max_files, max_object_bytes)
    settings = bench.ProfileSettings(seconds=seconds, fraction=fraction, sample_hz=sample_hz)
    folder = out or layout.root / "results"
    try:
        report = bench.run(layout, base, prepared.connector_jar, workload, settings, folder, executable, log=log)
    except RuntimeError as exc:
        log(f"error: {exc}")
        raise typer.Exit(2)
    report["command"] = _command("profile")
    path = Path(report["files"]["collapsed"]).with_name(Path(report["files"]["collapsed"]).name
                                                        .replace(".collapsed.txt", ".json"))
    path.write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(bench.text(report))
    log(f"wrote {path}")


# the options every job-setting sweep (checkpoints, bundles, settings) takes
_SWEEP_PHOTOS = typer.Option("small", "--photos", help="Workload: small, large, a folder or s3://bucket/prefix/.")
_SWEEP_QUICK = typer.Option(False, "--quick", help="Shorter runs (the e2e benchmark's quick settings).")
_SWEEP_EXPECTED = typer.Option(0.0, help="Images/s the bursts are sized for (0: 120 for small, 40 otherwise).")
_SWEEP_SET = typer.Option(None, "--set", help="KEY=VALUE job config override (all jobs).")
_SWEEP_JSON = typer.Option(None, "--json", help="Write the report here [.stack/results].")


@bench_app.command("checkpoints")
def checkpoints(
    intervals: str = typer.Option("1000,2000,5000,10000", help="Checkpoint intervals to measure, ms, comma-separated."),
    photos: str = _SWEEP_PHOTOS, quick: bool = _SWEEP_QUICK, expected: float = _SWEEP_EXPECTED,
    setting: Optional[List[str]] = _SWEEP_SET, json_path: Optional[Path] = _SWEEP_JSON,
) -> None:
    """Exactly-once latency and peak per checkpoint interval, against at-least-once, in one run."""
    from streaming.bench import checkpoints as bench

    chosen = _milliseconds(intervals, "--intervals", 100)
    _sweep("checkpoints", bench, chosen, "--intervals", photos, quick, expected, setting, json_path)


@bench_app.command("bundles")
def bundles(
    times: str = typer.Option("50,20,10,5", help="Bundle times to measure, ms, comma-separated; the first is "
                                                 "the reference."),
    photos: str = _SWEEP_PHOTOS, quick: bool = _SWEEP_QUICK, expected: float = _SWEEP_EXPECTED,
    setting: Optional[List[str]] = _SWEEP_SET, json_path: Optional[Path] = _SWEEP_JSON,
) -> None:
    """Latency, the job's own CPU per image and peak per PyFlink bundle time (at-least-once), in one run."""
    from streaming.bench.settings import BUNDLES

    chosen = _milliseconds(times, "--times", 1)
    _sweep("bundles", BUNDLES, chosen, "--times", photos, quick, expected, setting, json_path)


@bench_app.command("settings")
def settings(
    field: str = typer.Argument(..., help="The job setting: bundle_time_ms, bundle_size, fetch_concurrency, "
                                          "decode_concurrency, max_batch_size, max_batch_wait_ms, "
                                          "infer_concurrency, max_in_flight, cache_bytes, triton_shared_memory (0/1) "
                                          "or malloc_keep_bytes."),
    values: str = typer.Argument(..., help="Its values, comma-separated; the first is the reference."),
    photos: str = _SWEEP_PHOTOS, quick: bool = _SWEEP_QUICK, expected: float = _SWEEP_EXPECTED,
    setting: Optional[List[str]] = _SWEEP_SET, json_path: Optional[Path] = _SWEEP_JSON,
) -> None:
    """Latency, the job's own CPU per image and peak per value of one job setting (at-least-once), in one run."""
    from streaming.bench.settings import Sweep

    try:
        sweep = Sweep(field)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="FIELD") from None
    _sweep("settings", sweep, _integers(values, "VALUES", 0), "VALUES", photos, quick, expected, setting, json_path)


def _milliseconds(values: str, option: str, least: int) -> tuple[int, ...]:
    return _integers(values, option, least, " ms")


def _integers(values: str, option: str, least: int, unit: str = "") -> tuple[int, ...]:
    """`values`, comma-separated integers, each at least `least`; BadParameter naming `option` otherwise."""
    try:
        chosen = tuple(int(v) for v in values.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"comma-separated integers{unit}, e.g. 1000,2000,5000", param_hint=option) from None
    if not chosen or min(chosen) < least:
        raise typer.BadParameter(f"at least one value, each >= {least}{unit}", param_hint=option)
    return chosen


def _sweep(name: str, bench, values: tuple[int, ...], option: str, photos: str, quick: bool, expected: float,
           setting: Optional[List[str]], json_path: Optional[Path]) -> None:
    """A job-setting sweep (`bench.configs`, `bench.sweep`, `bench.table`) on one workload; writes its
    JSON report. Every job's config is checked before anything runs."""
    from streaming.bench import e2e

    def log(message: str) -> None:
        typer.echo(message, err=True)

    layout, prepared, base = _stack_and_config(setting)
    _check_configs(bench, base, values, option)
    (workload,) = _workloads(layout, [photos], False, MAX_FILES, MAX_OBJECT_BYTES)
    runner = e2e.new_bench(layout, base, prepared.connector_jar, e2e.MODES["quick" if quick else "full"], workload,
                           log)
    report = bench.sweep(runner, values, expected or (120.0 if workload.name == "small" else 40.0))
    report["workload"] = workload.summary()
    _write_report(name, bench, report, layout, json_path)


@bench_app.command("bridge")
def bridge(
    operators: str = typer.Option("async,thread", help="Echo operators, comma-separated: async, stats (async with "
                                                       "classify's gauges), map (process mode, at each --times), "
                                                       "thread (thread mode, once)."),
    times: str = typer.Option("10,50", help="Bundle times of the process-mode operators, ms, comma-separated."),
    rate: float = typer.Option(40.0, help="Requests/s of the steady run."),
    seconds: float = typer.Option(60.0, help="Length of the steady run."),
    burst: int = typer.Option(6000, help="Requests of the burst (and of each warm-up round)."),
    setting: Optional[List[str]] = _SWEEP_SET, json_path: Optional[Path] = _SWEEP_JSON,
) -> None:
    """What PyFlink itself costs per second and per request, with an operator that does no work."""
    from streaming.bench import bridge as bench
    from streaming.bench.echo_job import OPERATORS

    chosen_operators = tuple(o.strip() for o in operators.split(",") if o.strip())
    if not chosen_operators or any(o not in OPERATORS for o in chosen_operators):
        raise typer.BadParameter(f"comma-separated, each one of {', '.join(OPERATORS)}", param_hint="--operators")
    try:
        plan = bench.Plan(rate, seconds, burst)
    except bench.PlanError as exc:
        raise typer.BadParameter(exc.reason, param_hint=f"--{exc.field}") from None
    chosen = bench.variants(chosen_operators, _milliseconds(times, "--times", 1))
    layout, prepared, base = _stack_and_config(setting)
    _check_configs(bench, base, chosen, "--times")
    report = bench.run(layout, base, prepared.connector_jar, chosen, plan,
                       lambda message: typer.echo(message, err=True))
    _write_report("bridge", bench, report, layout, json_path)


@bench_app.command("worker")
def worker(
    photos: str = _SWEEP_PHOTOS,
    requests: int = typer.Option(600, help="Requests per round."),
    rounds: int = typer.Option(3, help="Rounds (the median is reported)."),
    profile: bool = typer.Option(False, "--profile", help="py-spy on this process during the last round."),
    py_spy: Optional[str] = typer.Option(None, "--py-spy", help="The py-spy executable (default: beside python, else on PATH)."),
    setting: Optional[List[str]] = _SWEEP_SET, json_path: Optional[Path] = _SWEEP_JSON,
) -> None:
    """The job's Python operator without Flink, in this process: its CPU per image beside the decode alone."""
    from streaming.bench import profile as bench_profile
    from streaming.bench import worker as bench

    _check_plan(bench, requests, rounds)
    executable = bench_profile.find_py_spy(py_spy) if profile else None
    if profile and executable is None:
        typer.echo("error: py-spy not found: pip install 'imgstream[bench]' or --py-spy PATH", err=True)
        raise typer.Exit(2)
    layout, _, base = _stack_and_config(setting)
    (workload,) = _workloads(layout, [photos], False, MAX_FILES, MAX_OBJECT_BYTES)
    report = bench.run(layout, base, workload, requests, rounds, executable, layout.root / "results",
                       lambda message: typer.echo(message, err=True))
    _write_report("worker", bench, report, layout, json_path)


@bench_app.command("fetch")
def fetch(
    photos: str = _SWEEP_PHOTOS,
    gets: int = typer.Option(2000, help="GETs per variant and round."),
    rounds: int = typer.Option(3, help="Rounds; the variants' order alternates each round."),
    setting: Optional[List[str]] = _SWEEP_SET, json_path: Optional[Path] = _SWEEP_JSON,
) -> None:
    """What one S3 GET costs this process's CPU: boto3's get_object against the job's fetcher."""
    from streaming.bench import fetch as bench

    _check_plan(bench, gets, rounds)
    layout, _, base = _stack_and_config(setting)
    (workload,) = _workloads(layout, [photos], False, MAX_FILES, MAX_OBJECT_BYTES)
    report = bench.run(layout, base, workload, gets, rounds, lambda message: typer.echo(message, err=True))
    _write_report("fetch", bench, report, layout, json_path)


@bench_app.command("client")
def client(
    batches: str = typer.Option("4,16", help="Batch sizes, comma-separated."),
    calls: int = typer.Option(40, help="Batches sent per variant and round."),
    rounds: int = typer.Option(3, help="Rounds; the variants' order rotates each round."),
    setting: Optional[List[str]] = _SWEEP_SET, json_path: Optional[Path] = _SWEEP_JSON,
) -> None:
    """What sending a batch to Triton costs per image: in the request (glibc's malloc thresholds, or
    large buffers kept) or through shared memory."""
    from streaming.bench import client as bench

    chosen = _integers(batches, "--batches", 1)
    _check_plan(bench, chosen, calls, rounds)
    layout, _, base = _stack_and_config(setting)
    report = bench.run(layout, base, chosen, calls, rounds, lambda message: typer.echo(message, err=True))
    _write_report("client", bench, report, layout, json_path)


def _check_plan(bench, *values) -> None:
    """`bench.check_plan(*values)` before anything runs: its ValueError ("--option: reason") as a
    BadParameter naming that option."""
    try:
        bench.check_plan(*values)
    except ValueError as exc:
        option, _, reason = str(exc).partition(": ")
        raise typer.BadParameter(reason, param_hint=option) from None


def _command(name: str, default: str | None = None) -> str:
    """The `imgstream bench <name> ...` command line this process was started with, for a report."""
    if name in sys.argv:
        return "imgstream bench " + " ".join(sys.argv[sys.argv.index(name):])
    return default or f"imgstream bench {name}"


def _check_configs(bench, base, values, option: str) -> None:
    """Every job config of a benchmark (`bench.configs`) built before anything runs; BadParameter
    naming `option` when one is refused."""
    from streaming.config import ConfigError

    try:
        bench.configs(base, values)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _write_report(name: str, bench, report: dict, layout, json_path: Optional[Path]) -> None:
    """The report with its command line, as JSON at `json_path` (or a dated file under
    .stack/results), and its `bench.table` printed."""
    import time

    report["command"] = _command(name)
    path = json_path or layout.root / "results" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(bench.table(report))
    typer.echo(f"wrote {path}", err=True)


@bench_app.command("soak")
def soak(
    minutes: float = typer.Option(5.0, help="Length of the hostile phase (the clean phase is a third of it)."),
    rate: float = typer.Option(20.0, help="Good events per second, both phases."),
    bad_per_good: float = typer.Option(0.5, help="Bad-input records sent per good event (hostile phase)."),
    setting: Optional[List[str]] = typer.Option(None, "--set", help="KEY=VALUE job config override."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the report here."),
) -> None:
    """Good events at a fixed rate with the whole bad-input corpus mixed in: no restart, no lost or
    doubled result, bounded memory, and good latency within 2x of a clean run. Exit 1 on a failed check."""
    import dataclasses

    from streaming.bench import soak as bench

    import streaming

    checkout = Path(streaming.__file__).resolve().parents[1]  # the corpus ships with a source checkout
    if (checkout / "tests" / "corpus").is_dir() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        from tests.corpus import corpus
    except ImportError:
        typer.echo("error: the bad-input corpus (tests/corpus/) is part of a source checkout: run from one",
                   err=True)
        raise typer.Exit(2)
    layout, prepared, config = _stack_and_config([f"{k}={v}" for k, v in corpus.JOB_SETTINGS.items()]
                                                 + list(setting or []))
    bucket = "bench-soak"
    bench.upload(layout, bucket, {f"corpus/{name}": data for name, data in corpus.image_files().items()})
    config = dataclasses.replace(config, allowed_schemes=("s3",), allowed_buckets=(bucket,))
    settings = bench.SoakSettings(rate_per_s=rate, clean_s=minutes * 20, hostile_s=minutes * 60,
                                  bad_per_good=bad_per_good)
    report = bench.run(layout, config, prepared.connector_jar, [f"s3://{bucket}/corpus/{corpus.GOOD_IMAGE}"],
                       lambda nonce: corpus.cases(bucket, "corpus/", nonce), settings,
                       log=lambda message: typer.echo(message, err=True))
    typer.echo(report.table())
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({**dataclasses.asdict(report), "checks": [
            dataclasses.asdict(c) for c in report.checks()]}, indent=2) + "\n")
    if not report.passed:
        raise typer.Exit(1)


def _stack_and_config(setting: Optional[List[str]]):
    """(layout, prepared stack, job config with the `--set` overrides) of a healthy local stack;
    exit 2 when it is not up, BadParameter on a bad override."""
    from streaming.stack.job_config import stack_config
    from streaming.stack import stack as local_stack
    from streaming.stack.layout import StackLayout

    layout = StackLayout.from_env()
    if not local_stack.status(layout)["healthy"]:
        typer.echo("error: the local stack is not up (or not healthy): run `imgstream stack up` first", err=True)
        raise typer.Exit(2)
    prepared = local_stack.prepare(layout)
    try:
        return layout, prepared, stack_config(layout, setting)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _workloads(layout, photos: Optional[List[str]], smoke: bool, max_files: int, max_object_bytes: int) -> list:
    """`--photos` as workloads (the samples fetched first); BadParameter on a bad value."""
    from streaming.bench import workloads
    from streaming.stack import s3 as stack_s3
    from streaming.stack.samples import ensure_samples

    ensure_samples(layout.samples_dir)
    try:
        return workloads.load_workloads(list(photos or []), layout.samples_dir, smoke=smoke,
                                        s3_client=lambda: stack_s3.s3_client(layout), max_files=max_files,
                                        max_object_bytes=max_object_bytes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _print_e2e(report: dict) -> None:
    """The tables, the estimate and the targets of a completed e2e report."""
    from streaming.bench import e2e_report, e2e_workloads

    machine = report["machine"]
    typer.echo(f"{report['command']}  ({machine['cpus']} cores, load average {machine['load_average_before']} "
               f"before, {machine['load_average_after']} after, {machine['duration_s'] / 60:.1f} min)\n")
    typer.echo(e2e_workloads.side_by_side(report))
    typer.echo("")
    first = report.get("workload", {}).get("name", "large")
    typer.echo(f"The {first} workload in full:\n")
    typer.echo(e2e_report.table(report))
    typer.echo("")
    typer.echo(e2e_report.LEGEND)
    typer.echo("")
    typer.echo(e2e_report.estimate_text(report))
    typer.echo("")
    for target in report["targets"]:
        typer.echo(f"{'met   ' if target['met'] else 'MISSED'} {target['target']}: {target['value']}")
