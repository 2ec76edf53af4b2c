"""Kafka with SASL_SSL: a second broker beside the stack's own, TLS on its only client listener.

The test makes a throw-away CA and a broker certificate for 127.0.0.1 with the `openssl` CLI
(PEM, nothing kept), and starts the broker from the stack's own code
(`StackLayout(kafka_sasl=True, kafka_ssl_keystore_file=..., kafka_ssl_ca_file=...)`, other ports,
its own folder). Checked: the broker's certificate verifies against that CA (and not against
another); a client that trusts the CA and logs in gets a record through; one
that trusts another CA (or only the system's), or speaks SASL_PLAINTEXT, or logs in with a wrong
password, does not; and the classify job (on the stack's Flink, S3 and Triton) configured with
kafka_security_protocol=SASL_SSL, kafka_ssl_ca_file=<the CA> and the SCRAM user reads requests
from and writes predictions to that broker, without a restart.
"""
from __future__ import annotations

import dataclasses
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from streaming.stack.job_config import stack_config
from streaming.stack import kafka
from tests.integration.broker_support import classify_through, publish_error, second_broker

OTHER_CA = Path(__file__).resolve().parents[1] / "tls" / "ca.pem"  # a CA that signed nothing here


def openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


def make_ca_and_broker_cert(folder: Path, host: str) -> tuple[Path, Path]:
    """A CA (PEM) and the broker's PKCS#8 key + certificate for `host` signed by it (one PEM file)."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=imgstream Kafka test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
            "-subj", f"/CN={host}", cwd=folder)
    (folder / "ext.cnf").write_text(f"subjectAltName=IP:{host},DNS:localhost\nbasicConstraints=CA:FALSE\n"
                                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                                    "extendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "broker.crt", "-days", "2", "-extfile", "ext.cnf", cwd=folder)
    keystore = folder / "broker.pem"
    keystore.write_text((folder / "broker.key").read_text() + (folder / "broker.crt").read_text())
    for name in ("ca.key", "broker.key", "broker.csr", "broker.crt", "ext.cnf", "ca.srl"):
        (folder / name).unlink(missing_ok=True)
    assert "BEGIN PRIVATE KEY" in keystore.read_text()  # PKCS#8, as Kafka's PEM key store needs
    return folder / "ca.pem", keystore


@pytest.fixture(scope="module")
def tls_layout(layout, prepared, tmp_path_factory):
    certs = tmp_path_factory.mktemp("kafka-tls-certs")
    ca, keystore = make_ca_and_broker_cert(certs, layout.host)
    with second_broker(layout, prepared, tmp_path_factory.mktemp("tls-stack"), kafka_ssl_keystore_file=keystore,
                       kafka_ssl_ca_file=ca) as tls:
        assert tls.kafka_security_protocol == "SASL_SSL"
        yield tls


def tls_handshake(layout, cafile: Path) -> ssl.SSLError | None:
    """None if a TLS handshake with the broker verifies against `cafile` (name checked), else the error."""
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with socket.create_connection((layout.host, layout.kafka_port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=layout.host):
                return None
    except ssl.SSLError as exc:
        return exc


def test_broker_certificate_verifies_against_its_ca_only(tls_layout):
    assert tls_handshake(tls_layout, tls_layout.kafka_ssl_ca_file) is None
    refused = tls_handshake(tls_layout, OTHER_CA)
    assert isinstance(refused, ssl.SSLCertVerificationError) and "unable to get local issuer" in str(refused)


def test_sasl_ssl_broker_takes_only_clients_that_trust_its_ca(tls_layout):
    kafka.ensure_topics(tls_layout, ["sasl-probe"], 1)
    right = kafka.client_security(tls_layout)
    assert right["security_protocol"] == "SASL_SSL" and right["ssl_cafile"] == str(tls_layout.kafka_ssl_ca_file)
    assert publish_error(tls_layout.kafka_bootstrap, **right) is None
    refused = {
        "another CA": {**right, "ssl_cafile": str(OTHER_CA)},
        "the system CAs": {k: v for k, v in right.items() if k != "ssl_cafile"},
        "no TLS": {**right, "security_protocol": "SASL_PLAINTEXT"},
        "a wrong password": {**right, "sasl_plain_password": "wrong"},
    }
    errors = {name: publish_error(tls_layout.kafka_bootstrap, **security) for name, security in refused.items()}
    print({name: repr(error)[:200] for name, error in errors.items()})
    got_through = [name for name, error in errors.items() if error is None]
    assert not got_through, f"records got through with {got_through}"


def test_job_reads_and_writes_through_sasl_ssl(layout, prepared, pipeline_config, tls_layout, test_bucket):
    config = dataclasses.replace(stack_config(tls_layout), kafka_security_protocol="SASL_SSL",
                                 kafka_ssl_ca_file=str(tls_layout.kafka_ssl_ca_file),
                                 allowed_buckets=pipeline_config.allowed_buckets)
    assert config.kafka_client_properties()["ssl.truststore.location"] == str(tls_layout.kafka_ssl_ca_file)
    classify_through(layout, prepared, config, tls_layout, test_bucket, "sasl-ssl")
