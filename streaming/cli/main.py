"""`imgstream`: run the local stack, submit the job, publish requests, read results."""
from __future__ import annotations

import dataclasses
import json
import sys
import urllib.error
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from flink_jobs import JOB_NAME
from streaming.cli.bench import bench_app
from streaming.cli.models import models_app
from streaming.config import ConfigError, PipelineConfig
from streaming.ops import jobs, kafka_io
from streaming.stack import kafka as stack_kafka
from streaming.stack import stack as local_stack
from streaming.stack.job_config import stack_config
from streaming.stack.layout import StackLayout


def _layout() -> StackLayout:
    return StackLayout.from_env()


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _failure(exc: BaseException, layout: StackLayout) -> str | None:
    """The one line for an ordinary failure (a service that does not answer or refuses, a job
    that does not run); None for anything else, a bug, whose traceback is worth seeing."""
    from botocore.exceptions import BotoCoreError, ClientError
    from kafka.errors import KafkaError

    if isinstance(exc, urllib.error.HTTPError):  # e.g. 404: no job with that id
        return f"Flink REST API {exc.url}: {exc}"
    if isinstance(exc, urllib.error.URLError):  # the CLI's only HTTP client is the Flink REST one
        return f"Flink REST API at {layout.flink_rest}: {exc.reason}"
    if isinstance(exc, KafkaError):
        return f"Kafka at {layout.kafka_bootstrap}: {exc}"
    if isinstance(exc, (BotoCoreError, ClientError)):
        return f"S3 at {layout.s3_endpoint}: {exc}"
    if isinstance(exc, jobs.JobError):
        return f"Flink: {exc}"
    return None


class _Commands(TyperGroup):
    """Every command runs inside `invoke`: an ordinary failure ends as `imgstream: <what>: <reason>`
    on stderr and exit 1, not a traceback."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = _failure(exc, _layout())
            if message is None:
                raise
            _echo(f"imgstream: {message}")
            raise typer.Exit(1) from None


app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, cls=_Commands)
stack_app = typer.Typer(no_args_is_help=True, help="The local single-node stack on loopback.")
job_app = typer.Typer(no_args_is_help=True, help="The PyFlink job on the session cluster.")
app.add_typer(stack_app, name="stack")
app.add_typer(job_app, name="job")
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")


@stack_app.command("up")
def stack_up(sasl: bool = typer.Option(False, "--sasl", help="Kafka accepts only SASL/SCRAM logins "
                                       "(same as IMGSTREAM_STACK_KAFKA_SASL=1; export that for the other commands).")) -> None:
    """Start Kafka, S3Proxy, Triton and Flink (downloads and builds what is missing)."""
    layout = dataclasses.replace(_layout(), kafka_sasl=True) if sasl else _layout()
    local_stack.up(layout, log=_echo)
    if sasl and not _layout().kafka_sasl:
        _echo("Kafka runs with SASL: export IMGSTREAM_STACK_KAFKA_SASL=1 so that other imgstream commands log in")
    report = local_stack.status(layout)
    typer.echo(json.dumps(_masked(report), indent=2))
    if not report["healthy"]:
        raise typer.Exit(1)


SECRET_WORDS = ("secret", "password", "credential", "token")


def _masked(report: dict) -> dict:
    """The status report with every secret-looking value (S3 secret key, passwords) as ***."""
    def mask(key: str, value):
        if isinstance(value, dict):
            return {k: mask(k, v) for k, v in value.items()}
        if any(word in key.lower() for word in SECRET_WORDS) and isinstance(value, str) and value:
            return "***"
        return value
    return {k: mask(k, v) for k, v in report.items()}


@stack_app.command("down")
def stack_down() -> None:
    """Stop every service of the stack; leaves no process behind."""
    local_stack.down(_layout(), log=_echo)


@stack_app.command("status")
def stack_status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
                 show_secrets: bool = typer.Option(False, "--show-secrets",
                                                   help="Print the S3 secret key and passwords (else ***).")
                 ) -> None:
    """Endpoints and health of each service; exit 1 unless all are healthy."""
    report = local_stack.status(_layout())
    if as_json:
        typer.echo(json.dumps(report if show_secrets else _masked(report), indent=2))
    else:
        for name, section in report.items():
            if isinstance(section, dict):
                mark = "up  " if section["healthy"] else "DOWN"
                endpoints = {k: v for k, v in section.items() if k not in ("healthy", "pid", "pids", "secret_key")}
                typer.echo(f"{mark} {name:7s} {endpoints}")
    raise typer.Exit(0 if report["healthy"] else 1)


def _checked_config(layout: StackLayout, settings: list[str] | None, create_topics: bool) -> PipelineConfig:
    """The job's config, refused (exit 2, the field and the reason on stderr) before anything runs."""
    try:
        config = stack_config(layout, settings)
        created = jobs.check_config(layout, config, create_topics=create_topics)
    except ValueError as exc:  # ConfigError names the field; netpolicy's checks name it in the message
        _echo(f"imgstream: invalid configuration: {exc}")
        raise typer.Exit(2) from None
    for topic in created:
        _echo(f"created topic {topic}")
    return config


def _submit(layout: StackLayout, config: PipelineConfig, connector_jar: Path, name: str, wait: bool) -> str:
    """Submit the job; with `wait`, until it runs (cancelled if it does not). Refused (exit 2) while
    a job of the same name may still run: Flink's KafkaSource reads every partition whatever its
    consumer group, so a second job on the same topics writes a second result for every request
    (and with exactly_once the two fence each other's transactions). Jobs on other topics run
    under other names."""
    live = [j for j in jobs.cancellable(jobs.list_jobs(layout)) if j.name == name]
    if live:
        listed = ", ".join(f"{j.id} ({j.state})" for j in live)
        _echo(f"imgstream: a job named {name!r} already runs on {layout.flink_rest}: {listed}; a second one "
              "on the same topics would write a second result for every request. Cancel it first "
              "(imgstream job cancel JOB_ID), or give a job on other topics another --name")
        raise typer.Exit(2)
    if wait:
        return jobs.submit_running(layout, config, connector_jar, name)
    return jobs.submit(layout, config, connector_jar, name)


@job_app.command("submit")
def job_submit(name: str = JOB_NAME,
               setting: Optional[List[str]] = typer.Option(None, "--set", help="KEY=VALUE config override"),
               create_topics: bool = typer.Option(False, "--create-topics",
                                                  help="Create requests_topic/results_topic if they do not exist."),
               wait: bool = typer.Option(True, help="Wait until every task runs.")) -> None:
    """Check the configuration (Kafka topics, Triton model), then submit the classify job to the
    session cluster; prints its id. Refused while a job of the same name may still run (`job list`,
    `job cancel`); a job that does not come up is cancelled."""
    layout = _layout()
    config = _checked_config(layout, setting, create_topics)
    prepared = local_stack.prepare(layout)
    typer.echo(_submit(layout, config, prepared.connector_jar, name, wait))


@job_app.command("list")
def job_list() -> None:
    for job in jobs.list_jobs(_layout()):
        typer.echo(f"{job.id}  {job.state:10s} {job.name}")


@job_app.command("cancel")
def job_cancel(job_id: Optional[str] = typer.Argument(None),
               all_jobs: bool = typer.Option(False, "--all", help="Every job not yet terminal (RESTARTING too)."),
               name_prefix: str = typer.Option("", "--name-prefix", help="With --all: only jobs whose name starts so.")
               ) -> None:
    """Cancel one job, or with --all every job not in a terminal state (FINISHED, CANCELED, FAILED, SUSPENDED)."""
    layout = _layout()
    if all_jobs:
        for job in jobs.cancel_all(layout, name_prefix):
            typer.echo(f"cancelled {job.id} (was {job.state}) {job.name}")
    elif job_id:
        jobs.cancel(layout, job_id)
        typer.echo(f"cancelled {job_id}")
    else:
        _echo("imgstream: give a JOB_ID or --all")
        raise typer.Exit(2)


@job_app.command("savepoint")
def job_savepoint(job_id: str, stop: bool = typer.Option(False, help="Stop the job with the savepoint.")) -> None:
    typer.echo(jobs.savepoint(_layout(), job_id, stop=stop))


def _expand(layout: StackLayout, uris: list[str]) -> list[str]:
    """s3://bucket/prefix/ (ending in /) expands to every object under it."""
    from streaming.stack import s3
    out: list[str] = []
    for uri in uris:
        if uri.startswith("s3://") and uri.endswith("/"):
            bucket, _, prefix = uri[5:].partition("/")
            client = s3.s3_client(layout)
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
        else:
            out.append(uri)
    return out


@app.command()
def publish(uris: Optional[List[str]] = typer.Argument(None, help="URIs; s3://bucket/prefix/ means every object under it"),
            from_file: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="One URI per line"),
            topic: Optional[str] = None) -> None:
    """Publish one request event per URI; prints each event as JSON."""
    layout = _layout()
    items = list(uris or [])
    if from_file:
        items += [line.strip() for line in from_file.read_text().splitlines() if line.strip()]
    events = kafka_io.make_requests(_expand(layout, items))
    kafka_io.publish(layout.kafka_bootstrap, topic or layout.requests_topic, events,
                     security=stack_kafka.client_security(layout))
    for event in events:
        typer.echo(json.dumps(event))
    _echo(f"published {len(events)} events to {topic or layout.requests_topic}")


def _describe(result: dict) -> str:
    """One line per result: an error, the best three labels, or an embedding's size; anything else
    on the topic (another producer's record) as its JSON."""
    try:
        if "error" in result:
            err = result["error"]
            return f"{result.get('uri')}  ERROR {err['code']} ({err['stage']}): {err['message']}"
        if "embedding" in result:
            best = f"embedding of {result['dim']} {result['dtype']}"
        else:  # a score the model made NaN is null
            best = ", ".join(f"{l['label']} {'n/a' if l['score'] is None else format(l['score'], '.2f')}"
                             for l in result["top_k"][:3])
        return f"{result['uri']}  →  {best}   [{result['timings_ms'].get('total', 0):.0f} ms]"
    except (KeyError, TypeError, ValueError, AttributeError):
        return json.dumps(result)


@app.command()
def results(count: Optional[int] = None, timeout: float = 60.0, as_json: bool = typer.Option(False, "--json"),
            topic: Optional[str] = None, from_beginning: bool = True) -> None:
    """Follow the results topic: one line per result (`--json`: the raw JSON)."""
    layout = _layout()
    for result in kafka_io.read_results(layout.kafka_bootstrap, topic or layout.results_topic, count=count,
                                        timeout_s=timeout, from_beginning=from_beginning,
                                        security=stack_kafka.client_security(layout)):
        typer.echo(json.dumps(result) if as_json else _describe(result))


@app.command()
def demo(timeout: float = 300.0) -> None:
    """Stack up, job submitted, every sample photo published, predictions printed."""
    layout = _layout()
    prepared = local_stack.up(layout, log=_echo)
    ours = [j for j in jobs.cancellable(jobs.list_jobs(layout)) if j.name == JOB_NAME]
    if ours:  # running, or still starting or restarting
        _echo(f"job already there: {ours[0].id} ({ours[0].state})")
        jobs.wait_running(layout, ours[0].id)
    else:
        _echo("submitting the job ...")
        job_id = _submit(layout, _checked_config(layout, None, create_topics=True), prepared.connector_jar,
                         JOB_NAME, wait=True)
        _echo(f"job {job_id} running; Flink web UI: {layout.flink_rest}/#/job/running")
    uris = _expand(layout, [f"s3://{layout.bucket}/{local_stack.SAMPLES_PREFIX}"])
    uris.append(f"s3://{layout.bucket}/{local_stack.SAMPLES_PREFIX}does-not-exist.jpg")
    events = kafka_io.make_requests(uris)
    kafka_io.publish(layout.kafka_bootstrap, layout.requests_topic, events, security=stack_kafka.client_security(layout))
    _echo(f"published {len(events)} requests; waiting for results ...")
    ids = {e["id"] for e in events}
    got = 0
    for result in kafka_io.read_results(layout.kafka_bootstrap, layout.results_topic, count=len(ids),
                                        timeout_s=timeout, ids=ids, security=stack_kafka.client_security(layout)):
        typer.echo(_describe(result))
        got += 1
    _echo(f"{got}/{len(ids)} results. Flink web UI: {layout.flink_rest}  ·  stop with: imgstream stack down")
    if got != len(ids):
        raise typer.Exit(1)


if __name__ == "__main__":
    sys.exit(app())
