"""kafka-python's keywords for a config's Kafka security settings (`client_security`); the
settings' validation and the Java clients' properties: test_config.py; the local stack's SASL
mode: test_stack_kafka.py. `kafka_client`: a client whose bootstrap fails leaves nothing open.
`read_results` keeps its timeout on a busy topic; `publish` raises what the broker refused."""
from __future__ import annotations

import json
import os
import threading
import time
import types

import psutil
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, TopicAuthorizationFailedError
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata
from kafka.structs import TopicPartition

from streaming.config import PipelineConfig, Secret
from streaming.ops import kafka_io
from tests.kafka_support import PASSWORD, sasl
from tests.net_support import free_port


def test_mutual_tls_properties():
    config = PipelineConfig(kafka_security_protocol="SSL", kafka_ssl_ca_file="/ca.pem",
                            kafka_ssl_keystore_file="/client.pem", kafka_ssl_key_password=Secret("kp"))
    props = config.kafka_client_properties()
    assert props == {"security.protocol": "SSL", "ssl.truststore.type": "PEM", "ssl.truststore.location": "/ca.pem",
                     "ssl.keystore.type": "PEM", "ssl.keystore.location": "/client.pem", "ssl.key.password": "kp"}
    assert kafka_io.client_security(config) == {
        "security_protocol": "SSL", "ssl_check_hostname": True, "ssl_cafile": "/ca.pem",
        "ssl_certfile": "/client.pem", "ssl_password": "kp"}


def test_kafka_python_keywords_from_the_config():
    assert kafka_io.client_security(PipelineConfig()) == {"security_protocol": "PLAINTEXT"}
    kwargs = kafka_io.client_security(sasl(kafka_security_protocol="SASL_PLAINTEXT"))
    assert kwargs == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                      "sasl_plain_username": "svc-imgstream", "sasl_plain_password": PASSWORD}


def _held() -> tuple[int, int]:
    """This process's open epolls and Unix sockets (a network client's selector and wake-up pair)."""
    epolls = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            epolls += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventpoll]"
        except OSError:  # the listing's own descriptor, closed meanwhile
            pass
    return epolls, len(psutil.Process().net_connections(kind="unix"))


@pytest.mark.parametrize("kind", [KafkaAdminClient, KafkaProducer, KafkaConsumer])
def test_a_client_that_cannot_bootstrap_leaves_no_thread_or_socket(kind):
    """Nothing listens on the port: the constructor's bootstrap fails after it started its network
    client. kafka-python alone would leave that client's I/O thread, epoll and socket pair open."""
    port = free_port()
    threads, held = set(threading.enumerate()), _held()
    for _ in range(3):
        with pytest.raises(KafkaError):
            kafka_io.kafka_client(kind, bootstrap_servers=f"127.0.0.1:{port}", bootstrap_timeout_ms=300)
    assert [t.name for t in set(threading.enumerate()) - threads if t.is_alive()] == []
    # none more than before (an earlier test's epoll may be collected meanwhile); the refused TCP
    # sockets are kafka-python's own, closed when collected
    assert all(now <= before for now, before in zip(_held(), held)), (_held(), held)


def test_kafka_python_checks_crcs_in_native_code():
    """Every record batch kafka-python sends or reads is CRC32C-checked; without the `crc32c`
    extra that is pure Python (0.28 ms per 2 KB here: more than the rest of a result's read)."""
    from kafka.record import _crc32c, util
    assert util.crc32c_c is not None, "kafka-python[crc32c] is not installed: CRCs are checked in pure Python"
    assert util.calc_crc32c(b"123456789") == _crc32c.crc(b"123456789") == 0xE3069283  # the CRC-32C check value


class _BusyConsumer:
    """A topic where other requests' results, non-JSON records and tombstones arrive every 10 ms for `for_s`."""

    def __init__(self, for_s: float):
        self.for_s = for_s
        self.closed = False

    def __iter__(self):
        end = time.monotonic() + self.for_s
        values = [json.dumps({"id": "other"}).encode(), b"not json", None]
        n = 0
        while time.monotonic() < end:
            time.sleep(0.01)
            n += 1
            yield types.SimpleNamespace(topic="t", partition=0, offset=n, value=values[n % len(values)])

    def close(self):
        self.closed = True


def test_read_results_ends_at_its_timeout_while_skipped_records_keep_coming(monkeypatch):
    consumer = _BusyConsumer(for_s=3.0)
    monkeypatch.setattr(kafka_io, "kafka_client", lambda kind, *args, **settings: consumer)
    started = time.monotonic()
    got = list(kafka_io.read_results("127.0.0.1:1", "t", count=1, timeout_s=0.2, ids={"mine"},
                                     on_skipped=lambda description: None))
    assert got == [] and time.monotonic() - started < 1.5 and consumer.closed


class _Producer:
    """Each record's future fails with `error` (what the broker answered) or succeeds; flush() does
    not raise, as kafka-python's only logs a failed batch."""

    def __init__(self, error: Exception | None):
        self.error, self.closed = error, False

    def send(self, topic, value=None, key=None):
        produced = FutureProduceResult(TopicPartition(topic, 0))
        future = FutureRecordMetadata(produced, 0, -1, None, len(key or b""), len(value or b""), -1)
        if self.error:
            produced.failure(self.error)
        else:
            produced.success((0, -1, None))
        return future

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        self.closed = True


def test_publish_raises_what_the_broker_refused_instead_of_counting_it(monkeypatch):
    producer = _Producer(TopicAuthorizationFailedError())
    monkeypatch.setattr(kafka_io, "kafka_client", lambda kind, *args, **settings: producer)
    with pytest.raises(TopicAuthorizationFailedError):
        kafka_io.publish("127.0.0.1:1", "t", kafka_io.make_requests(["s3://b/a.jpg", "s3://b/b.jpg"]))
    assert producer.closed


def test_publish_counts_what_the_broker_took(monkeypatch):
    monkeypatch.setattr(kafka_io, "kafka_client", lambda kind, *args, **settings: _Producer(None))
    assert kafka_io.publish("127.0.0.1:1", "t", [*kafka_io.make_requests(["s3://b/a.jpg"]), b"raw", None]) == 3
