"""Submit, list, cancel and savepoint the job on the Flink session cluster (CLI + REST API)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from streaming.config import ENV_PREFIX, ConfigError, PipelineConfig, field_types
from streaming.stack.flink import FLINK_HOME, flink_env
from streaming.stack.layout import PROJECT_ROOT, StackLayout
from streaming.stack.process import loopback_opener

JOB_SCRIPT = PROJECT_ROOT / "flink_jobs" / "classify.py"
# Flink's terminal job states (SUSPENDED: locally terminal, this JobManager gave the job up); every
# other state (CREATED, INITIALIZING, RUNNING, FAILING, RESTARTING, CANCELLING, RECONCILING) belongs
# to a job that may still run or restart.
TERMINAL_STATES = frozenset({"FINISHED", "CANCELED", "FAILED", "SUSPENDED"})
CHECK_TIMEOUT_S = 10.0
SUBMIT_TIMEOUT_S = 300.0


class JobError(RuntimeError):
    """The Flink CLI or REST API refused or failed an operation."""


@dataclass(frozen=True)
class JobInfo:
    id: str
    name: str
    state: str


def _rest(layout: StackLayout, path: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{layout.flink_rest}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with loopback_opener().open(req, timeout=10) as resp:
        text = resp.read()
    return json.loads(text) if text else {}


def check_config(layout: StackLayout, config: PipelineConfig, *, create_topics: bool = False) -> list[str]:
    """What `job submit` checks before submitting anything: Kafka answers (with the config's security),
    `requests_topic` and `results_topic` exist (with `create_topics`: missing ones are created, and
    returned), exactly-once's `transaction_timeout_ms` is within the brokers' limit, Triton serves `model_name` and each of `allowed_models` with a valid contract. Raises
    ConfigError naming the field."""
    from streaming.config import ConfigError
    from streaming.infer import TritonClassifier

    created = _check_kafka(layout, config, create_topics)
    others = [dataclasses.replace(config, model_name=name, model_version="")
              for name in config.allowed_models if name != config.model_name]
    for model_config in [config, *others]:
        classifier = TritonClassifier(model_config)
        try:
            classifier.check_model(timeout_s=CHECK_TIMEOUT_S)
        except ConfigError as exc:
            if model_config is config:
                raise
            raise ConfigError("allowed_models", exc.reason) from None
        finally:
            classifier.close()
    return created


def _check_kafka(layout: StackLayout, config: PipelineConfig, create: bool) -> list[str]:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

    from streaming.ops.kafka_io import REQUESTS_TOPIC_CONFIGS, client_security, kafka_client

    for field in ("kafka_ssl_ca_file", "kafka_ssl_keystore_file"):  # read here as by the job's clients
        path = getattr(config, field)
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(field, f"{path} is not a file this process can read")
    timeout_ms = int(CHECK_TIMEOUT_S * 1000)
    try:
        admin = kafka_client(KafkaAdminClient, bootstrap_servers=config.kafka_bootstrap, client_id="imgstream-check",
                             bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms,
                             **client_security(config))
    except ValueError as exc:  # kafka-python's parse of the address, e.g. a port that is not a number
        raise ConfigError("kafka_bootstrap", f"{config.kafka_bootstrap!r} is not host:port[,host:port...]: "
                                             f"{exc}") from None
    except (KafkaError, OSError) as exc:
        raise ConfigError("kafka_bootstrap", f"Kafka at {config.kafka_bootstrap} did not answer "
                                             f"({type(exc).__name__})") from None
    try:
        if config.delivery_guarantee == "exactly_once":
            _check_transaction_timeout(admin, config)
        existing = set(admin.list_topics())
        wanted = {"requests_topic": config.requests_topic, "results_topic": config.results_topic}
        missing = {field: topic for field, topic in wanted.items() if topic not in existing}
        if "requests_topic" not in missing:
            _check_requests_compression(admin, config)
        if not missing:
            return []
        if not create:
            field, topic = next(iter(missing.items()))
            raise ConfigError(field, f"topic {topic!r} does not exist on {config.kafka_bootstrap} "
                                     "(create it, or submit with --create-topics)")
        names = sorted(set(missing.values()))
        result = admin.create_topics({name: {"num_partitions": max(layout.topic_partitions, config.parallelism),
                                             "replication_factor": -1,  # -1: the broker's default
                                             "topic_configs": REQUESTS_TOPIC_CONFIGS
                                             if name == config.requests_topic else {}}
                                      for name in names}, timeout_ms=timeout_ms, raise_errors=False)
        for topic in result["topics"]:
            error = for_code(topic["error_code"])
            if topic["error_code"] != 0 and error is not TopicAlreadyExistsError:
                field = next(f for f, t in missing.items() if t == topic["name"])
                raise ConfigError(field, f"creating topic {topic['name']!r}: {error.__name__} "
                                         f"{topic.get('error_message') or ''}".strip())
        admin.wait_for_topics(names, timeout_ms=30_000)
        return names
    except KafkaError as exc:
        raise ConfigError("kafka_bootstrap",
                          f"Kafka at {config.kafka_bootstrap} failed: {type(exc).__name__}") from None
    finally:
        admin.close()


def _check_requests_compression(admin: Any, config: PipelineConfig) -> None:
    """The requests topic stores batches uncompressed (`kafka_io.REQUESTS_TOPIC_CONFIGS`: why there).
    Not checked when the topic's config is not shown (no DescribeConfigs permission)."""
    for compression in _shown_config(admin, "topic", [config.requests_topic], "compression.type"):
        if compression != "uncompressed":
            raise ConfigError("requests_topic",
                              f"topic {config.requests_topic!r} has compression.type={compression}: a compressed "
                              "event can decompress to gigabytes in the job's Kafka consumer (OutOfMemoryError, "
                              "then a restart for ever). Set compression.type=uncompressed on it (kafka-configs.sh "
                              "--alter --entity-type topics --entity-name ... --add-config "
                              "compression.type=uncompressed): the broker then refuses any batch over "
                              "max.message.bytes uncompressed")


def _check_transaction_timeout(admin: Any, config: PipelineConfig) -> None:
    """The sink's transactions last up to `transaction_timeout_ms`; a broker refuses a producer that
    asks for more than its `transaction.max.timeout.ms` (the job would fail and restart for ever).
    Not checked when the brokers do not show their configs (no DescribeConfigs permission)."""
    from kafka.errors import KafkaError

    try:
        brokers = [str(b["broker_id"]) for b in admin.describe_cluster()["brokers"]]
    except (KafkaError, KeyError, TypeError):  # not shown, or not as expected
        return
    limits = [int(value) for value in _shown_config(admin, "broker", brokers, "transaction.max.timeout.ms")
              if value.isdigit()]
    if limits and config.transaction_timeout_ms > min(limits):
        raise ConfigError("transaction_timeout_ms", f"is {config.transaction_timeout_ms}, above the brokers' "
                                                    f"transaction.max.timeout.ms ({min(limits)}): Kafka would refuse "
                                                    "the job's transactions")


def _shown_config(admin: Any, kind: str, names: list[str], key: str) -> list[str]:
    """`key`'s value in the config of each `kind` resource ("broker" or "topic") of `names`, as
    Kafka shows it: none when it does not (no DescribeConfigs permission) or not as expected."""
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import KafkaError

    try:
        found = admin.describe_configs([ConfigResource(ConfigResourceType[kind.upper()], name, configs={key: None})
                                        for name in names], config_filter="all")
        return [str(entry[key]["value"]) for entry in found.get(kind, {}).values() if key in entry]
    except (KafkaError, KeyError, TypeError, ValueError, AttributeError):
        return []


def job_environment(config: PipelineConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with the job's settings exactly `config`'s: an `IMGSTREAM_<FIELD>` variable of this
    process that `config` leaves unset (None) must not reach the job."""
    inherited = {k: v for k, v in environ.items()
                 if not (k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX):].lower() in field_types())}
    return {**inherited, **{ENV_PREFIX + k.upper(): v for k, v in config.to_mapping().items()}}


def submit(layout: StackLayout, config: PipelineConfig, connector_jar: Path, name: str, *,
           savepoint_path: str | None = None, allow_non_restored_state: bool = False,
           script: Path = JOB_SCRIPT, args: Sequence[str] = ()) -> str:
    """Submit the job detached through `flink run`; returns the job id. Checks nothing beyond the
    config object itself: `job submit` calls `check_config` first.

    With `savepoint_path` the job starts from that savepoint (or retained checkpoint): every
    operator state in it must map to an operator of the new topology by uid, unless
    `allow_non_restored_state` (`flink run -n`) drops what does not. A state that maps nowhere
    fails the job while it initializes (`wait_running` raises). `script` and `args` (after
    `name`) run another job module, e.g. a changed topology."""
    python = sys.executable
    env = job_environment(config, {**os.environ, **flink_env(layout)})
    restore = []
    if savepoint_path:
        restore = ["--fromSavepoint", savepoint_path]
        if allow_non_restored_state:
            restore.append("--allowNonRestoredState")
    argv = [str(FLINK_HOME / "bin" / "flink"), "run", "--detached",
            "--jarfile", str(connector_jar),
            f"-Dpipeline.name={name}", *restore,
            "--python", str(script), "--pyExecutable", python, "--pyClientExecutable", python,
            name, *args]
    try:
        proc = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                              timeout=SUBMIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise JobError(f"flink run did not finish in {SUBMIT_TIMEOUT_S:.0f}s; see `imgstream job list` and "
                       f"the Flink web UI at {layout.flink_rest}") from None
    found = re.search(r"JobID ([0-9a-f]{32})", proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        raise JobError(f"flink run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return found.group(1)


@dataclass(frozen=True)
class RunningJob:
    id: str
    config: PipelineConfig

    @property
    def requests_topic(self) -> str:
        return self.config.requests_topic

    @property
    def results_topic(self) -> str:
        return self.config.results_topic


def submit_on_fresh_topics(layout: StackLayout, config: PipelineConfig, connector_jar: Path,
                           name: str, *, kafka_layout: StackLayout | None = None, script: Path = JOB_SCRIPT,
                           args: Sequence[str] = ()) -> RunningJob:
    """Run the job on request/result topics, consumer group and transactional ids of its own
    (`<name>-<random>-...`), reading from the start; waits until it runs (cancels it if it does
    not). The topics are created on `kafka_layout`'s broker (a second, secured one), else `layout`'s.
    `script` and `args` as in `submit`."""
    from streaming.stack import kafka

    prefix = f"{name}-{uuid.uuid4().hex[:8]}"
    config = dataclasses.replace(config, requests_topic=f"{prefix}-requests", results_topic=f"{prefix}-results",
                                 consumer_group=prefix, transactional_id_prefix=prefix, start_from="earliest")
    kafka.ensure_topics(kafka_layout or layout, [config.requests_topic, config.results_topic],
                        max(layout.topic_partitions, config.parallelism))
    return RunningJob(submit_running(layout, config, connector_jar, prefix, script=script, args=args), config)


def submit_running(layout: StackLayout, config: PipelineConfig, connector_jar: Path, name: str, *,
                   script: Path = JOB_SCRIPT, args: Sequence[str] = ()) -> str:
    """`submit`, then wait until the job runs; a job that does not (or a wait cut short) is cancelled,
    so none is left behind to read the topics. Returns the job id."""
    job_id = submit(layout, config, connector_jar, name, script=script, args=args)
    try:
        wait_running(layout, job_id)
    except BaseException:
        cancel_quietly(layout, job_id)
        raise
    return job_id


def list_jobs(layout: StackLayout) -> list[JobInfo]:
    jobs = _rest(layout, "/jobs/overview").get("jobs", [])
    return [JobInfo(j["jid"], j["name"], j["state"]) for j in jobs]


def job_state(layout: StackLayout, job_id: str) -> tuple[str, list[str]]:
    """The job's state and the states of its vertices."""
    info = _rest(layout, f"/jobs/{job_id}")
    return info["state"], [v["status"] for v in info.get("vertices", [])]


def wait_running(layout: StackLayout, job_id: str, timeout_s: float = 180) -> None:
    """Wait until the job and all its tasks run."""
    deadline = time.monotonic() + timeout_s
    state = "?"
    while time.monotonic() < deadline:
        state, vertices = job_state(layout, job_id)
        if state == "RUNNING" and vertices and all(v == "RUNNING" for v in vertices):
            return
        if state in ("FAILED", "CANCELED", "FINISHED"):
            break
        time.sleep(1)
    raise JobError(f"job {job_id} is {state}, not running; see the Flink web UI at {layout.flink_rest}")


def cancel(layout: StackLayout, job_id: str) -> None:
    _rest(layout, f"/jobs/{job_id}?mode=cancel", method="PATCH")


def num_restarts(layout: StackLayout, job_id: str, timeout_s: float = 45.0) -> int:
    """Flink's restart count of the job. The REST API fills job metrics lazily (every ~10 s),
    so an empty answer means "not fetched yet": ask again."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = _rest(layout, f"/jobs/{job_id}/metrics?get=numRestarts")
        if metrics:
            return int(metrics[0]["value"])
        if time.monotonic() > deadline:
            raise JobError(f"Flink reported no numRestarts metric for job {job_id} in {timeout_s:.0f}s")
        time.sleep(1)


def exceptions(layout: StackLayout, job_id: str) -> list:
    """The job's exception history (what made it fail or restart)."""
    return _rest(layout, f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]


def cancel_quietly(layout: StackLayout, job_id: str) -> None:
    """Cancel the job if Flink answers; a cluster already gone (restarted, stopped) is no error."""
    try:
        cancel(layout, job_id)
    except OSError:
        pass


def cancellable(found: list[JobInfo], name_prefix: str = "") -> list[JobInfo]:
    """The jobs `cancel_all` cancels: not in a terminal state, name starting with `name_prefix`."""
    return [j for j in found if j.state not in TERMINAL_STATES and j.name.startswith(name_prefix)]


def cancel_all(layout: StackLayout, name_prefix: str = "", timeout_s: float = 60) -> list[JobInfo]:
    """Cancel every job not in a terminal state (RESTARTING ones too) whose name starts with
    `name_prefix`, and wait until each is terminal; returns them as they were found."""
    doomed = cancellable(list_jobs(layout), name_prefix)
    for job in doomed:
        cancel(layout, job.id)
    deadline = time.monotonic() + timeout_s
    for job in doomed:
        state = job.state
        while state not in TERMINAL_STATES:
            if time.monotonic() > deadline:
                raise JobError(f"job {job.id} is still {state} {timeout_s:.0f}s after it was cancelled")
            time.sleep(0.5)
            state = job_state(layout, job.id)[0]
    return doomed


def savepoint(layout: StackLayout, job_id: str, *, stop: bool = False, timeout_s: float = 120) -> str:
    """Trigger a savepoint (or stop-with-savepoint); returns its location."""
    path = f"/jobs/{job_id}/stop" if stop else f"/jobs/{job_id}/savepoints"
    body = {"drain": False} if stop else {"cancel-job": False}
    trigger = _rest(layout, path, method="POST", body=body)["request-id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _rest(layout, f"/jobs/{job_id}/savepoints/{trigger}")
        if status["status"]["id"] == "COMPLETED":
            operation = status["operation"]
            if "failure-cause" in operation:
                raise JobError(f"savepoint failed: {operation['failure-cause'].get('stack-trace', '')[:2000]}")
            return operation["location"]
        time.sleep(1)
    raise JobError(f"savepoint of {job_id} did not complete in {timeout_s:.0f}s")
