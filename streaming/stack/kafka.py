"""A single-node Apache Kafka 4 (KRaft, broker+controller in one JVM) on loopback, from the locked jars.

With `layout.kafka_sasl` the client listener is SASL_PLAINTEXT with SCRAM-SHA-512 only (the
broker talks to itself over it too); the user is created in the KRaft metadata when the storage
is formatted, which happens once per data dir, so every data dir is formatted with it and SASL
can be switched on later. No authorizer is configured: any authenticated user may do anything
(the local stack tests authentication, not ACLs). With `layout.kafka_ssl_keystore_file` (and
its CA) the client listener also speaks TLS: SASL_SSL with SASL, SSL without; the caller makes
the key, certificate and CA (`tests/integration/test_kafka_tls.py` makes a throw-away CA with
the `openssl` CLI); see `streaming/ops/kafka_io.py` for the client settings.
"""
from __future__ import annotations

import base64
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any, Sequence

from streaming.ops import kafka_io
from streaming.stack.artifacts import classpath, java_executable
from streaming.stack.job_config import kafka_config
from streaming.stack.layout import StackLayout
from streaming.stack.process import ServiceSpec

SERVICE_NAME = "kafka"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
NODE_ID = 1
MESSAGE_MAX_BYTES = 8 * 1024 * 1024
TRANSACTION_MAX_TIMEOUT_MS = 60 * 60 * 1000  # Flink's KafkaSink default transaction.timeout.ms is 1 h
# Sized for a shared 2-core box; the same GC flags as kafka-server-start.sh, a smaller heap.
HEAP_OPTS = ("-Xms256m", "-Xmx512m")
TOOL_HEAP_OPTS = ("-Xms32m", "-Xmx256m")
JVM_OPTS = (
    "-XX:MaxMetaspaceSize=256m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
)
# Kafka 4 logs through slf4j 1.7 -> log4j-slf4j-impl -> log4j2; without a config log4j2 prints only ERRORs.
# log4j2's own shutdown hook would stop logging before Kafka's shutdown hook has finished.
LOG4J2_PROPERTIES = """\
status = warn
name = imgstream-kafka
shutdownHook = disable
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class KafkaSetupError(RuntimeError):
    """Formatting the KRaft storage or creating topics failed."""


def config_path(layout: StackLayout) -> Path:
    return layout.data_dir("kafka") / "server.properties"


def log4j_path(layout: StackLayout) -> Path:
    return layout.data_dir("kafka") / "log4j2.properties"


def log_dirs(layout: StackLayout) -> Path:
    """Where the broker keeps partitions and the KRaft metadata log."""
    return layout.data_dir("kafka") / "log-dirs"


SCRAM_MARKER = "scram-credentials"  # in the data dir: formatted with the SASL user


def server_properties(layout: StackLayout) -> dict[str, str]:
    """The broker+controller configuration."""
    host = layout.host
    props = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{host}:{layout.kafka_controller_port}",
        "listeners": f"PLAINTEXT://{host}:{layout.kafka_port},CONTROLLER://{host}:{layout.kafka_controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{layout.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dirs(layout)),
        "num.partitions": str(layout.topic_partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "transaction.max.timeout.ms": str(TRANSACTION_MAX_TIMEOUT_MS),
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "message.max.bytes": str(MESSAGE_MAX_BYTES),
        # every topic as the requests topic must be (kafka_io.REQUESTS_TOPIC_CONFIGS): batches kept
        # uncompressed, so the broker refuses one over message.max.bytes once decompressed
        **kafka_io.REQUESTS_TOPIC_CONFIGS,
        "replica.fetch.max.bytes": str(MESSAGE_MAX_BYTES),
        "socket.request.max.bytes": str(4 * MESSAGE_MAX_BYTES),
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "24",
        "log.segment.bytes": str(256 * 1024 * 1024),
    }
    if layout.kafka_sasl or layout.kafka_tls:
        props.update(_secured_listener(layout))
    return props


def _secured_listener(layout: StackLayout) -> dict[str, str]:
    """The client listener (which the broker also uses to talk to itself) with SASL/SCRAM, TLS or
    both; the controller listener stays PLAINTEXT on loopback."""
    host, protocol = layout.host, layout.kafka_security_protocol
    props = {
        "listeners": f"{protocol}://{host}:{layout.kafka_port},CONTROLLER://{host}:{layout.kafka_controller_port}",
        "advertised.listeners": f"{protocol}://{host}:{layout.kafka_port}",
        "inter.broker.listener.name": protocol,
        "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{protocol}:{protocol}",
    }
    prefix = f"listener.name.{protocol.lower()}"
    if layout.kafka_sasl:
        mechanism = layout.kafka_sasl_mechanism
        props.update({
            "sasl.enabled.mechanisms": mechanism,
            "sasl.mechanism.inter.broker.protocol": mechanism,
            f"{prefix}.{mechanism.lower()}.sasl.jaas.config": _jaas(layout),
        })
    if layout.kafka_tls:
        props.update({
            f"{prefix}.ssl.keystore.type": "PEM",
            f"{prefix}.ssl.keystore.location": str(layout.kafka_ssl_keystore_file),
            # the broker's own client (inter-broker) verifies its certificate against the CA and
            # its name (Kafka's default https endpoint identification)
            f"{prefix}.ssl.truststore.type": "PEM",
            f"{prefix}.ssl.truststore.location": str(layout.kafka_ssl_ca_file),
            f"{prefix}.ssl.client.auth": "none",
            f"{prefix}.ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
        })
    return props


def _jaas(layout: StackLayout) -> str:
    return ('org.apache.kafka.common.security.scram.ScramLoginModule required '
            f'username="{layout.kafka_sasl_username}" password="{layout.kafka_sasl_password}";')


def client_security(layout: StackLayout) -> dict[str, Any]:
    """kafka-python keyword arguments for this stack's Kafka (empty for PLAINTEXT): those of its
    job config (`job_config.kafka_config`), computed by `streaming.ops.kafka_io.client_security`."""
    if not (layout.kafka_sasl or layout.kafka_tls):
        return {}
    return kafka_io.client_security(kafka_config(layout))


def _render(props: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in props.items())


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _random_cluster_id() -> str:
    """A Kafka `Uuid` in its base64url form (22 chars), never starting with '-' (as Uuid.randomUuid)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def cluster_id(layout: StackLayout) -> str:
    """The cluster id kept in the data dir (created on first use)."""
    path = layout.data_dir("kafka") / "cluster.id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_random_cluster_id() + "\n")
    return path.read_text().strip()


def _java(layout: StackLayout, jars: Sequence[Path], heap: Sequence[str], main: str, *args: str) -> list[str]:
    return [
        java_executable(), *heap, *JVM_OPTS,
        f"-Dlog4j2.configurationFile={log4j_path(layout)}",
        f"-Dkafka.logs.dir={layout.data_dir('kafka')}",
        "-cp", classpath(jars), main, *args,
    ]


def prepare_kafka(layout: StackLayout, jars: Sequence[Path]) -> Path:
    """Write the config files and format the KRaft storage once (idempotent). Returns the config path."""
    data = layout.data_dir("kafka")
    data.mkdir(parents=True, exist_ok=True)
    _write_if_changed(log4j_path(layout), LOG4J2_PROPERTIES)
    _write_if_changed(config_path(layout), _render(server_properties(layout)))
    if (log_dirs(layout) / "meta.properties").exists():
        if layout.kafka_sasl and not (data / SCRAM_MARKER).exists():
            raise KafkaSetupError(f"the Kafka data in {data} was formatted without the SASL user; "
                                  "remove that folder (its topics are lost) or use another IMGSTREAM_STACK_DIR")
        return config_path(layout)
    scram = f"{layout.kafka_sasl_mechanism}=[name={layout.kafka_sasl_username},password={layout.kafka_sasl_password}]"
    argv = _java(
        layout, jars, TOOL_HEAP_OPTS, STORAGE_TOOL, "format", "--config", str(config_path(layout)),
        "--cluster-id", cluster_id(layout), "--ignore-formatted", "--add-scram", scram,
    )
    done = subprocess.run(argv, cwd=data, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise KafkaSetupError(f"kafka storage format failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    (data / SCRAM_MARKER).write_text(f"{layout.kafka_sasl_mechanism} user {layout.kafka_sasl_username}\n")
    return config_path(layout)


def kafka_healthy(layout: StackLayout) -> bool:
    """True if a kafka-python admin client can bootstrap and list topics (a few seconds at most)."""
    from kafka import KafkaAdminClient

    try:  # fail fast while nothing listens yet
        socket.create_connection((layout.host, layout.kafka_port), timeout=1).close()
    except OSError:
        return False
    try:
        admin = kafka_io.kafka_client(
            KafkaAdminClient, bootstrap_servers=layout.kafka_bootstrap, client_id="imgstream-health",
            bootstrap_timeout_ms=3000, request_timeout_ms=3000,
            reconnect_backoff_ms=100, reconnect_backoff_max_ms=500, **client_security(layout),
        )
    except Exception:  # noqa: BLE001 - any failure means "not (yet) healthy"
        return False
    try:
        admin.list_topics()
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        admin.close()


def kafka_service(layout: StackLayout, jars: Sequence[Path]) -> ServiceSpec:
    """The broker+controller process; call `prepare_kafka` first (it writes the config this runs)."""
    return ServiceSpec(
        name=SERVICE_NAME,
        argv=tuple(_java(layout, jars, HEAP_OPTS, MAIN_CLASS, str(config_path(layout)))),
        cwd=layout.data_dir("kafka"),
        health=lambda: kafka_healthy(layout),
        ready_timeout_s=120.0,
    )


def ensure_topics(layout: StackLayout, names: Sequence[str], partitions: int) -> list[str]:
    """Create the missing topics (replication 1) and wait until they have leaders. Returns the created names."""
    from kafka import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError, for_code

    admin = kafka_io.kafka_client(
        KafkaAdminClient, bootstrap_servers=layout.kafka_bootstrap, client_id="imgstream-setup",
        bootstrap_timeout_ms=10000, request_timeout_ms=15000, **client_security(layout),
    )
    try:
        missing = [n for n in dict.fromkeys(names) if n not in set(admin.list_topics())]
        if not missing:
            return []
        result = admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1} for name in missing},
            timeout_ms=15000, raise_errors=False,
        )
        created: list[str] = []
        for topic in result["topics"]:
            error = for_code(topic["error_code"])
            if error is TopicAlreadyExistsError:  # created concurrently: fine
                continue
            if topic["error_code"] != 0:
                raise KafkaSetupError(f"creating topic {topic['name']}: {error.__name__} {topic.get('error_message') or ''}")
            created.append(topic["name"])
        admin.wait_for_topics(missing, timeout_ms=30000)
        return created
    finally:
        admin.close()


def delete_topics(layout: StackLayout, names: Sequence[str]) -> None:
    """Best effort: topics of a finished benchmark or test run are of no use after it."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = kafka_io.kafka_client(KafkaAdminClient, bootstrap_servers=layout.kafka_bootstrap,
                                      client_id="imgstream-setup", **client_security(layout))
    except KafkaError:
        return
    try:
        admin.delete_topics(list(names), timeout_ms=15000)
    except KafkaError:
        pass
    finally:
        admin.close()
