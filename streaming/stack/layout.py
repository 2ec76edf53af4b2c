"""Where the local stack lives and which loopback ports it uses: one typed object."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from streaming.config import STACK_ENV_VARIABLES, PipelineConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The local stack's variables, declared in streaming.config (PipelineConfig.from_env knows them: any
# other IMGSTREAM_* is an error): the stack folder, a port offset, Kafka with SASL.
ENV_VARIABLES = STACK_ENV_VARIABLES
DIR_ENV, PORT_OFFSET_ENV, KAFKA_SASL_ENV = ENV_VARIABLES
# The stack serves what the job connects to by default: its host, Kafka and Triton ports and topics
# are PipelineConfig's defaults, not a copy of them (`job_config.stack_config` derives the rest).
_JOB = PipelineConfig()
_HOST, _KAFKA_PORT = _JOB.kafka_bootstrap.rsplit(":", 1)
_TRITON_GRPC_PORT = _JOB.triton_grpc.rsplit(":", 1)[1]


@dataclass(frozen=True, kw_only=True)
class StackLayout:
    """Folders and endpoints of the single-node local stack (everything on loopback)."""

    root: Path = PROJECT_ROOT / ".stack"
    host: str = _HOST
    kafka_port: int = int(_KAFKA_PORT)
    kafka_controller_port: int = 9093
    s3_port: int = 9000
    triton_http_port: int = 8000
    triton_grpc_port: int = int(_TRITON_GRPC_PORT)
    triton_metrics_port: int = 8002
    flink_rest_port: int = 8081
    flink_rpc_port: int = 6123
    requests_topic: str = _JOB.requests_topic
    results_topic: str = _JOB.results_topic
    topic_partitions: int = 2
    bucket: str = "samples"
    s3_access_key: str = "local-access-key"
    s3_secret_key: str = "local-secret-key"
    # Kafka with SASL/SCRAM (`stack up --sasl` or IMGSTREAM_STACK_KAFKA_SASL=1): the client
    # listener then accepts only SASL_PLAINTEXT logins of this user (local credentials, like S3's).
    kafka_sasl: bool = False
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = "imgstream"
    kafka_sasl_password: str = "imgstream-local-secret"
    # Kafka with TLS on the client listener (SASL_SSL with kafka_sasl, else SSL): the broker's
    # private key (PKCS#8, unencrypted) and certificate chain in one PEM file, its certificate
    # naming `host` (an IP SAN for 127.0.0.1), and the PEM CA that signed it (the broker trusts it
    # when it talks to itself; clients get it as kafka_ssl_ca_file). Both or neither.
    kafka_ssl_keystore_file: Path | None = None
    kafka_ssl_ca_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.kafka_ssl_keystore_file is None) != (self.kafka_ssl_ca_file is None):
            raise ValueError("kafka_ssl_keystore_file and kafka_ssl_ca_file go together (TLS needs both)")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "StackLayout":
        """Reads the variables of `ENV_VARIABLES` (and no other)."""
        env = os.environ if environ is None else environ
        changes: dict = {}
        if env.get(DIR_ENV):
            changes["root"] = Path(env[DIR_ENV]).resolve()
        try:
            offset = int(env.get(PORT_OFFSET_ENV) or 0)
        except ValueError:
            raise ValueError(f"{PORT_OFFSET_ENV} must be an integer, got {env[PORT_OFFSET_ENV]!r}") from None
        if offset:
            changes.update({f.name: getattr(cls, f.name) + offset for f in fields(cls)
                            if f.name.endswith("_port")})
        if (env.get(KAFKA_SASL_ENV) or "").strip().lower() in ("1", "true", "yes", "on"):
            changes["kafka_sasl"] = True
        return cls(**changes)

    @property
    def run_dir(self) -> Path:
        """Pid and log files."""
        return self.root / "run"

    @property
    def jars_dir(self) -> Path:
        return self.root / "jars"

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def model_repository(self) -> Path:
        return PROJECT_ROOT / "triton_models" / "repository"

    def data_dir(self, service: str) -> Path:
        return self.root / "data" / service

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_ssl_keystore_file is not None

    @property
    def kafka_security_protocol(self) -> str:
        """The client listener's protocol: PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL."""
        if self.kafka_sasl:
            return "SASL_SSL" if self.kafka_tls else "SASL_PLAINTEXT"
        return "SSL" if self.kafka_tls else "PLAINTEXT"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def triton_grpc(self) -> str:
        return f"{self.host}:{self.triton_grpc_port}"

    @property
    def triton_http(self) -> str:
        return f"http://{self.host}:{self.triton_http_port}"

    @property
    def flink_rest(self) -> str:
        return f"http://{self.host}:{self.flink_rest_port}"
