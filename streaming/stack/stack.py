"""The local stack as a whole: `up`, `down`, `status`.

Order matters: Kafka and S3 first (the job's ends), then Triton, then Flink. Everything
is idempotent: `up` on a running stack only checks health; `down` stops what runs.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass
from pathlib import Path

from streaming.stack import artifacts, flink, kafka, process, s3, triton
from streaming.stack.layout import StackLayout
from streaming.stack.samples import ensure_samples

SERVICE_ORDER = ("kafka", "s3proxy", "triton", "flink-jobmanager", "flink-taskmanager")
SAMPLES_PREFIX = "samples/"


@dataclass(frozen=True)
class StackArtifacts:
    """What the stack needs on disk before anything starts."""

    kafka_jars: tuple[Path, ...]
    s3proxy_jar: Path
    connector_jar: Path
    samples: tuple[Path, ...]
    model_repository: Path


def prepare(layout: StackLayout) -> StackArtifacts:
    """Download and build everything (jars, Triton, model, photos); fast when already done."""
    from triton_models.build import build_repository, store_in

    kafka_jars = artifacts.ensure_jars(layout.jars_dir, "kafka")
    (s3proxy_jar,) = artifacts.ensure_jars(layout.jars_dir, "s3proxy")
    (connector_jar,) = artifacts.ensure_jars(layout.jars_dir, "flink-connector")
    samples = ensure_samples(layout.samples_dir)
    build_repository(layout.model_repository, store=store_in(layout.root))
    repository = layout.model_repository
    triton.install_server(layout)
    return StackArtifacts(tuple(kafka_jars), s3proxy_jar, connector_jar, tuple(samples), repository)


def specs(layout: StackLayout, prepared: StackArtifacts) -> list[process.ServiceSpec]:
    ports = {"kafka": (layout.kafka_port, layout.kafka_controller_port), "s3proxy": (layout.s3_port,),
             "triton": (layout.triton_http_port, layout.triton_grpc_port, layout.triton_metrics_port),
             "flink-jobmanager": (layout.flink_rest_port, layout.flink_rpc_port)}
    return [dataclasses.replace(spec, ports=ports.get(spec.name, ()), host=layout.host) for spec in [
        kafka.kafka_service(layout, list(prepared.kafka_jars)),
        s3.s3_service(layout, prepared.s3proxy_jar),
        triton.triton_service(layout, prepared.model_repository),
        *flink.flink_services(layout),
    ]]


def service(layout: StackLayout, prepared: StackArtifacts, name: str) -> process.ServiceSpec:
    """One service's spec by name (to restart it alone)."""
    return next(spec for spec in specs(layout, prepared) if spec.name == name)


def up(layout: StackLayout, log=print) -> StackArtifacts:
    prepared = prepare(layout)
    kafka.prepare_kafka(layout, list(prepared.kafka_jars))
    for spec in specs(layout, prepared):
        log(f"starting {spec.name} ...")
        process.start(spec, layout.run_dir)
        if spec.name == "kafka":
            kafka.ensure_topics(layout, [layout.requests_topic, layout.results_topic],
                                layout.topic_partitions)
        if spec.name == "s3proxy":
            s3.ensure_bucket(layout, layout.bucket)
            for folder in sorted({p.parent for p in prepared.samples}):
                s3.upload_dir(layout, layout.bucket, f"{SAMPLES_PREFIX}{folder.name}/", folder)
        log(f"{spec.name} healthy")
    return prepared


def down(layout: StackLayout, log=print) -> None:
    for name in reversed(SERVICE_ORDER):
        if process.stop(layout.run_dir, name):
            log(f"stopped {name}")


def status(layout: StackLayout) -> dict:
    """Every endpoint with its health; 'healthy' is true only when all are."""
    running = {name: process.running_pid(layout.run_dir, name) for name in SERVICE_ORDER}
    overview = flink.overview(layout) if running["flink-jobmanager"] else None
    report = {
        "kafka": {"bootstrap": layout.kafka_bootstrap, "security_protocol": layout.kafka_security_protocol,
                  "requests_topic": layout.requests_topic,
                  "results_topic": layout.results_topic, "pid": running["kafka"],
                  "healthy": bool(running["kafka"]) and kafka.kafka_healthy(layout)},
        "s3": {"endpoint": layout.s3_endpoint, "bucket": layout.bucket,
               "access_key": layout.s3_access_key, "secret_key": layout.s3_secret_key,
               "pid": running["s3proxy"], "healthy": bool(running["s3proxy"]) and s3.s3_healthy(layout)},
        "triton": {"grpc": layout.triton_grpc, "http": layout.triton_http,
                   "metrics": f"http://{layout.host}:{layout.triton_metrics_port}/metrics",
                   "pid": running["triton"],
                   "healthy": bool(running["triton"]) and triton.ready(layout)},
        "flink": {"rest": layout.flink_rest, "web_ui": layout.flink_rest + "/",
                  "pids": [running["flink-jobmanager"], running["flink-taskmanager"]],
                  "taskmanagers": (overview or {}).get("taskmanagers", 0),
                  "healthy": bool(overview and overview.get("taskmanagers", 0) >= 1)},
    }
    report["healthy"] = all(section["healthy"] for section in report.values())
    return report
