"""The job's configuration: one typed, validated object built from the environment or CLI.

Only `PipelineConfig.from_env` reads the environment (variables prefixed `IMGSTREAM_`).
Secrets are wrapped in `Secret` so they never show in a repr, a log line or a result.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from streaming.contract import MAX_TOP_K
from streaming.malloc import MAX_KEEP_BYTES, MIN_KEEP_BYTES


ENV_PREFIX = "IMGSTREAM_"
MAX_URI_CHARS = 8192  # results never carry a longer URI: the upper bound of max_uri_chars
# IMGSTREAM_* variables that are not job settings, declared here so that the engine imports no tooling:
# the local stack's (read by streaming/stack/layout.py) ...
STACK_ENV_VARIABLES = ("IMGSTREAM_STACK_DIR",  # logs, data, downloads
                       "IMGSTREAM_STACK_PORT_OFFSET",  # added to every port, so a second stack can run beside
                       "IMGSTREAM_STACK_KAFKA_SASL")  # 1: Kafka with SASL/SCRAM
# ... and the test suite's.
TOOL_ENV_VARIABLES = ("IMGSTREAM_SAMPLES_DIR",  # tests/unit/test_model_export.py: the sample photos
                      "IMGSTREAM_CRDS_DIR",  # tests/unit/k8s_support.py: Kubernetes CRDs
                      "IMGSTREAM_FUZZ_SELFTEST")  # tests/fuzz/fuzz_decode.py: the fuzzer's self-test
# Numbers that must be > 0; every other int/float field must be >= 0. Durations are at most a day
# (`_s` fields 86,400, `_ms` fields 86,400,000): beyond that, timers overflow or never fire.
POSITIVE_FIELDS = frozenset({
    "max_event_bytes", "max_uri_chars", "max_object_bytes", "max_pixels", "max_decode_ms", "max_decode_bytes",
    "fetch_timeout_s", "fetch_concurrency", "fetch_buffer_bytes", "infer_timeout_s", "max_batch_size",
    "infer_concurrency", "request_timeout_s", "max_in_flight", "parallelism", "checkpoint_interval_ms",
    "bundle_size", "bundle_time_ms", "transaction_timeout_ms"})
MAX_SECONDS = 86_400
CHECKPOINT_TIMEOUT_MS = 5 * 60 * 1000  # the least; see PipelineConfig.checkpoint_timeout_ms
JAVA_INT_FIELDS = frozenset({"parallelism", "max_in_flight", "bundle_size"})  # Flink reads them as Java ints
JAVA_INT_MAX = 2**31 - 1
# Names and addresses that are never empty nor padded with blanks (a `--set model_name= x` typo)
NAME_FIELDS = ("kafka_bootstrap", "requests_topic", "results_topic", "consumer_group", "transactional_id_prefix",
               "s3_region", "triton_grpc", "model_name")
KAFKA_SHADED_PREFIX = "org.apache.flink.kafka.shaded."  # of flink-sql-connector-kafka's Kafka client


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; `field` names it, the message says why."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class Secret:
    """A string that prints as *** ."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Everything the job and its stages need. Units are in the names."""

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    requests_topic: str = "image-requests"
    results_topic: str = "image-results"
    consumer_group: str = "imgstream"
    start_from: str = "committed"  # committed offsets, else earliest
    kafka_security_protocol: str = "PLAINTEXT"  # or SASL_PLAINTEXT, SASL_SSL, SSL
    kafka_sasl_mechanism: str | None = None  # e.g. SCRAM-SHA-512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: Secret | None = None
    # Kafka TLS (security protocol SSL or SASL_SSL): PEM files, read by the Java and Python clients
    kafka_ssl_ca_file: str | None = None  # CA certificates that sign the brokers' certificates
    kafka_ssl_keystore_file: str | None = None  # client key + certificate chain (mutual TLS only)
    kafka_ssl_key_password: Secret | None = None  # when that private key is encrypted
    # Results: exactly_once (visible at checkpoints) or at_least_once (low latency, dedupe by id)
    delivery_guarantee: str = "exactly_once"
    transactional_id_prefix: str = "imgstream"
    transaction_timeout_ms: int = 15 * 60 * 1000  # above checkpoint interval + restart time
    # S3 (credentials: standard AWS chain unless given here)
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key: Secret | None = None
    s3_secret_key: Secret | None = None
    # What may be fetched
    allowed_schemes: tuple[str, ...] = ("s3",)
    allowed_buckets: tuple[str, ...] = ()  # empty: any bucket
    file_root: str | None = None  # file:// URIs are allowed only under this folder
    allowed_s3_prefixes: tuple[str, ...] = ()  # "bucket/key-prefix" entries; empty: any key
    allowed_hosts: tuple[str, ...] = ()  # http(s) hosts: "name", "*.suffix", "*", each [":port"|":*"]; empty: none
    http_trusted_networks: tuple[str, ...] = ()  # CIDRs http(s) may reach although private/loopback
    max_redirects: int = 3  # http(s) redirects followed, each hop checked again
    # Limits
    max_event_bytes: int = 64 * 1024
    max_uri_chars: int = 2048
    max_object_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 64_000_000
    max_decode_ms: int = 10_000  # wall-clock time of one image's decode + resize (enforced)
    max_decode_bytes: int = 256 * 1024 * 1024  # memory one decode may use (budget checked before decoding)
    fetch_timeout_s: float = 10.0
    fetch_retries: int = 3  # after the first attempt
    fetch_concurrency: int = 16  # requests fetched at once per operator (I/O: may exceed the cores)
    # objects' bytes the fetch threads of one operator hold at once, read and not yet decoded
    # (streaming/budget.py); at least 2 x max_object_bytes
    fetch_buffer_bytes: int = 256 * 1024 * 1024
    decode_concurrency: int = 0  # of those, decoded at once (CPU); 0: the cores this process may use
    cache_bytes: int = 0  # decoded-image LRU cache in bytes (for workloads where images return); 0: off
    # Model / Triton
    triton_grpc: str = "127.0.0.1:8001"
    model_name: str = "efficientnet_lite0"
    model_version: str = ""
    allowed_models: tuple[str, ...] = ()  # other models an event may name ("model"); empty: model_name only
    # The input size, resize rule and output kind come from the model's contract, read from Triton.
    top_k: int = 0  # labels per classes result; 0: the model contract's top_k
    infer_timeout_s: float = 30.0
    infer_retry_window_s: float = 90.0  # while Triton is unreachable, keep retrying this long
    max_batch_size: int = 16
    max_batch_wait_ms: int = 10
    infer_concurrency: int = 2  # batches in flight to Triton at once, per model
    # batches through /dev/shm instead of the request: only with Triton on the same host (checked
    # before a job is submitted); 0.1-0.2 ms less client CPU per 224-px image (`imgstream bench client`)
    triton_shared_memory: bool = False
    # buffers up to this size (batches, tensors, fetched objects) are reused from the worker's heap,
    # not mapped afresh, and up to this much free heap stays per malloc arena (glibc's thresholds,
    # `streaming/malloc.py`): 0.3-0.6 ms less gRPC client CPU per 224-px image. 0: glibc's own
    malloc_keep_bytes: int = 32 * 1024 * 1024
    request_timeout_s: float = 120.0  # a request still unfinished then gets a request_timeout error
    max_in_flight: int = 64  # requests in flight per operator; more backpressures Kafka
    # Flink
    parallelism: int = 1
    # exactly-once results wait for the next checkpoint: 2 s measured p50 1.2 s at half load with no
    # loss of peak, 10 s p50 5.9 s (`imgstream bench checkpoints`, README)
    checkpoint_interval_ms: int = 2_000
    # The Python worker gets a bundle's events when it closes and returns its results once all
    # are done; a bundle closes after this many records or milliseconds: small = low latency,
    # more bundles. 10 ms: p50 132 ms at 35 images/s against 245-319 ms for 50 ms, peak within the
    # run's noise, +2.1-2.4 CPU ms per image at that rate (`imgstream bench bundles`, README).
    bundle_size: int = 256
    bundle_time_ms: int = 10

    def __post_init__(self) -> None:
        _check_numbers(self)
        for name, kind in field_types().items():  # a secret given as plain text would print
            if Secret in typing.get_args(kind) and not isinstance(getattr(self, name), (Secret, type(None))):
                raise ConfigError(name, "must be a Secret")
        if self.delivery_guarantee not in ("exactly_once", "at_least_once"):
            raise ConfigError("delivery_guarantee",
                              f"must be exactly_once|at_least_once, got {self.delivery_guarantee!r}")
        if self.delivery_guarantee == "exactly_once" and (
                self.transaction_timeout_ms <= self.checkpoint_interval_ms + self.checkpoint_timeout_ms):
            raise ConfigError("transaction_timeout_ms", "must exceed checkpoint_interval_ms + the checkpoint timeout "
                                                        f"({self.checkpoint_interval_ms} + {self.checkpoint_timeout_ms} "
                                                        "ms): a transaction is open until the next checkpoint completes, "
                                                        "and the broker aborts one that outlives it")
        if self.kafka_sasl_username and not self.kafka_sasl_mechanism:
            raise ConfigError("kafka_sasl_username", "needs kafka_sasl_mechanism")
        if self.start_from not in ("committed", "earliest", "latest"):
            raise ConfigError("start_from", f"must be committed|earliest|latest, got {self.start_from!r}")
        unknown = set(self.allowed_schemes) - {"s3", "file", "http", "https"}
        if unknown:
            raise ConfigError("allowed_schemes", f"unknown URI schemes: {sorted(unknown)}")
        from streaming.netpolicy import check_config  # host patterns, networks, S3 prefixes
        check_config(self.allowed_hosts, self.http_trusted_networks, self.allowed_s3_prefixes)
        if self.kafka_security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ConfigError("kafka_security_protocol", "must be PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL, "
                                                         f"got {self.kafka_security_protocol!r}")
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = [n for n in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                       if not getattr(self, n)]
            if missing or self.kafka_sasl_mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
                raise ConfigError((missing or ["kafka_sasl_mechanism"])[0],
                                  "SASL needs kafka_sasl_mechanism (PLAIN|SCRAM-SHA-256|SCRAM-SHA-512), "
                                  "kafka_sasl_username and kafka_sasl_password")
        for name in ("kafka_sasl_username", "kafka_sasl_password"):  # quoted into a JAAS config
            value = getattr(self, name)
            text = value.value if isinstance(value, Secret) else value
            if text and any(c in '"\\' or ord(c) < 32 or ord(c) == 127 for c in text):
                raise ConfigError(name, "must not contain quotes, backslashes or control characters")
        if (self.kafka_ssl_ca_file or self.kafka_ssl_keystore_file) and "SSL" not in self.kafka_security_protocol:
            raise ConfigError("kafka_ssl_ca_file" if self.kafka_ssl_ca_file else "kafka_ssl_keystore_file",
                              "kafka_ssl_* files need kafka_security_protocol SSL or SASL_SSL")
        _check_half_set(self)
        if self.fetch_buffer_bytes < 2 * self.max_object_bytes:
            raise ConfigError("fetch_buffer_bytes", f"must be at least 2 x max_object_bytes ({2 * self.max_object_bytes}): "
                                                    "a body read in pieces is held twice while they are joined, "
                                                    f"got {self.fetch_buffer_bytes}")
        if self.max_uri_chars > MAX_URI_CHARS:
            raise ConfigError("max_uri_chars", f"must be at most {MAX_URI_CHARS} (results never carry a longer URI), "
                                               f"got {self.max_uri_chars}")
        if self.s3_endpoint is not None:
            _check_endpoint(self.s3_endpoint)
        if self.malloc_keep_bytes and not MIN_KEEP_BYTES <= self.malloc_keep_bytes <= MAX_KEEP_BYTES:
            raise ConfigError("malloc_keep_bytes", f"must be 0 (glibc's own thresholds) or {MIN_KEEP_BYTES} "
                                                   f"to {MAX_KEEP_BYTES} (1 to 32 MiB), got {self.malloc_keep_bytes}")

    @property
    def checkpoint_timeout_ms(self) -> int:
        """Flink's checkpoint timeout: 5 min, or longer than a request may take, since a checkpoint
        waits for the requests in flight (PyFlink's async operator drains them at the barrier)."""
        return max(CHECKPOINT_TIMEOUT_MS, round(self.request_timeout_s * 1000) + 60_000)

    def kafka_client_properties(self) -> dict[str, str]:
        """Security settings for the Java Kafka clients (Flink's connector); kafka-python's
        keywords come from `streaming.ops.kafka_io.client_security`."""
        props = {"security.protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            props["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username and self.kafka_sasl_password:
            # flink-sql-connector-kafka shades the Kafka client: its login modules live under
            # org.apache.flink.kafka.shaded (the plain class names are not on the job's classpath)
            module = KAFKA_SHADED_PREFIX + ("org.apache.kafka.common.security.scram.ScramLoginModule"
                                            if self.kafka_sasl_mechanism.startswith("SCRAM") else
                                            "org.apache.kafka.common.security.plain.PlainLoginModule")
            props["sasl.jaas.config"] = (f'{module} required username="{self.kafka_sasl_username}" '
                                         f'password="{self.kafka_sasl_password.value}";')
        if self.kafka_ssl_ca_file:
            props.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": self.kafka_ssl_ca_file})
        if self.kafka_ssl_keystore_file:
            props.update({"ssl.keystore.type": "PEM", "ssl.keystore.location": self.kafka_ssl_keystore_file})
        if self.kafka_ssl_key_password:
            props["ssl.key.password"] = self.kafka_ssl_key_password.value
        return props

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> "PipelineConfig":
        """Build from strings keyed by field name (lower case); unknown keys are an error."""
        types = field_types()
        unknown = sorted(set(values) - set(types))
        if unknown:
            raise ConfigError(unknown[0], "unknown settings: " + ", ".join(
                _unknown(name, types, lambda n: n) for name in unknown))
        return cls(**{k: _parse(k, types[k], v) for k, v in values.items()})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "PipelineConfig":
        """Read `IMGSTREAM_<FIELD>` variables; keyword overrides win. Any other `IMGSTREAM_*`
        variable is an error naming the closest field, unless the local stack or the tests read it."""
        env = os.environ if environ is None else environ
        types = field_types()
        others = set(STACK_ENV_VARIABLES) | set(TOOL_ENV_VARIABLES)
        values, unknown = {}, []
        for key, value in env.items():
            if not key.startswith(ENV_PREFIX) or key in others:
                continue
            name = key[len(ENV_PREFIX):].lower()
            if name in types:
                values[name] = value
            else:
                unknown.append(key)
        if unknown:
            unknown.sort()
            raise ConfigError(unknown[0], "unknown variables: " + ", ".join(
                _unknown(key, types, lambda n: ENV_PREFIX + n.upper()) for key in unknown))
        return dataclasses.replace(cls.from_mapping(values), **overrides)

    def to_mapping(self) -> dict[str, str]:
        """Strings keyed by field name, secrets included: for handing the config to the job only."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Secret):
                value = value.value
            elif isinstance(value, tuple):
                value = ",".join(value)
            out[f.name] = str(value)
        return out


@functools.cache
def field_types() -> dict[str, Any]:
    """Each field's declared type (resolved, not the annotation's text)."""
    hints = typing.get_type_hints(PipelineConfig)
    return {f.name: hints[f.name] for f in fields(PipelineConfig)}


def _unknown(name: str, types: Mapping[str, Any], spell) -> str:
    """'name' (did you mean 'closest'?) for an unknown setting or variable."""
    bare = name[len(ENV_PREFIX):].lower() if name.startswith(ENV_PREFIX) else name.lower()
    close = difflib.get_close_matches(bare, list(types), n=1, cutoff=0.6)
    return f"{name!r} (did you mean {spell(close[0])!r}?)" if close else repr(name)


def _parse(name: str, kind: Any, raw: str) -> Any:
    """A field's value from its text, by the field's declared type."""
    args = typing.get_args(kind)
    if type(None) in args:  # Optional: empty text is None
        if raw.strip() == "":
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is Secret:
        return Secret(raw)
    if typing.get_origin(kind) is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind is bool:
        text = raw.strip().lower()
        if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ConfigError(name, f"must be true or false, got {raw!r}")
        return text in ("1", "true", "yes", "on")
    if kind in (int, float):
        try:
            return kind(raw.strip())
        except ValueError:
            raise ConfigError(name, f"must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if kind is str:
        return raw
    raise TypeError(f"{name}: no parser for {kind!r}")


def _check_endpoint(endpoint: str) -> None:
    """s3_endpoint: an http(s) URL with a host, no user info, query or fragment."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError("s3_endpoint", f"is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("s3_endpoint", f"must be an http(s) URL with a host, got {endpoint!r}")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ConfigError("s3_endpoint", "must not carry user info, a query or a fragment")


def _check_numbers(config: PipelineConfig) -> None:
    """Every int/float field: the right type, finite, in range (positive where it must be)."""
    for name, kind in field_types().items():
        if kind not in (int, float):
            continue
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
            raise ConfigError(name, f"must be {'a number' if kind is float else 'an integer'}, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(name, f"must be a finite number, got {value!r}")
        if name in POSITIVE_FIELDS and value <= 0:
            raise ConfigError(name, f"must be positive, got {value!r}")
        if value < 0:
            raise ConfigError(name, f"must be >= 0, got {value!r}")
        limit = MAX_SECONDS if name.endswith("_s") else MAX_SECONDS * 1000 if name.endswith("_ms") else None
        if limit is not None and value > limit:
            raise ConfigError(name, f"must be at most {limit} (one day), got {value!r}")
        if name in JAVA_INT_FIELDS and value > JAVA_INT_MAX:
            raise ConfigError(name, f"must be at most {JAVA_INT_MAX} (Flink reads it as a Java int), got {value!r}")
    if config.top_k > MAX_TOP_K:
        raise ConfigError("top_k", f"must be at most {MAX_TOP_K} (a contract's own limit), got {config.top_k}")
    for name in NAME_FIELDS:
        value = getattr(config, name)
        if not isinstance(value, str) or not value or value != value.strip():
            raise ConfigError(name, f"must be a non-empty string without leading or trailing blanks, got {value!r}")


def _check_half_set(config: PipelineConfig) -> None:
    """Settings that only work together: refuse one without the other."""
    if (config.s3_access_key is None) != (config.s3_secret_key is None):
        missing = "s3_secret_key" if config.s3_secret_key is None else "s3_access_key"
        raise ConfigError(missing, "missing: set both s3_access_key and s3_secret_key, or neither "
                                   "(the AWS credential chain)")
    if not config.kafka_security_protocol.startswith("SASL_"):
        for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"):
            if getattr(config, name) is not None:
                raise ConfigError(name, "needs kafka_security_protocol SASL_PLAINTEXT or SASL_SSL, "
                                        f"got {config.kafka_security_protocol}")
