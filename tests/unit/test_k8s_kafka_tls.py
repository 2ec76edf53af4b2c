"""The job talks to Kafka over SASL_SSL: SCRAM-SHA-512 on Strimzi's TLS listener, trusting the cluster CA
that Strimzi writes into the Secret `<cluster>-cluster-ca-cert`, mounted where IMGSTREAM_KAFKA_SSL_CA_FILE
points. No listener carries passwords in plaintext. (The local SASL_SSL broker test lives beside the
stack's own SASL tests.)
"""
from __future__ import annotations

import copy
import posixpath

import pytest

from k8s_support import container_named, flink, job_config, kustomize, objects, one, rendered  # noqa: F401


def flink_main(objects: list[dict]) -> tuple[dict, dict]:
    pod = one(objects, "FlinkDeployment")["spec"]["podTemplate"]["spec"]
    return pod, container_named(pod, "flink-main-container")


def tls_problems(objects: list[dict]) -> list[str]:
    problems = []
    kafka = one(objects, "Kafka")
    for listener in kafka["spec"]["kafka"]["listeners"]:
        if not listener.get("tls"):
            problems.append(f"listener {listener['name']} :{listener['port']} is plaintext")
    pod, main = flink_main(objects)
    config = job_config(flink(objects)[1])
    if config.kafka_security_protocol != "SASL_SSL":
        problems.append(f"the job uses {config.kafka_security_protocol}")
    ca = config.kafka_ssl_ca_file
    if not ca:
        return problems + ["the job trusts no CA: it cannot verify the brokers"]
    folder, name = posixpath.split(ca)
    mounts = [m for m in main.get("volumeMounts", []) if m["mountPath"].rstrip("/") == folder]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secret = volumes[mounts[0]["name"]].get("secret", {}) if mounts else {}
    expected = f"{kafka['metadata']['name']}-cluster-ca-cert"
    if secret.get("secretName") != expected:
        problems.append(f"{ca} is not from Strimzi's Secret {expected}")
    elif {"key": "ca.crt", "path": name} not in secret.get("items", [{"key": name, "path": name}]):
        problems.append(f"{ca} is not the Secret's key ca.crt")
    return problems


def test_the_job_uses_sasl_ssl_with_the_strimzi_cluster_ca(objects):
    assert not tls_problems(objects)


@pytest.mark.parametrize("defect", ["plaintext-listener", "protocol", "no-ca", "wrong-secret", "wrong-key"])
def test_tls_check_catches_each_defect(rendered, defect):
    objects = copy.deepcopy(rendered["prod"])
    pod, main = flink_main(objects)
    config_map = next(o for o in objects if o["kind"] == "ConfigMap"
                      and o["metadata"]["name"].startswith("imgstream-job-config-"))
    volume = next(v for v in pod["volumes"] if v["name"] == "kafka-cluster-ca")
    if defect == "plaintext-listener":
        one(objects, "Kafka")["spec"]["kafka"]["listeners"].append(
            {"name": "scram", "port": 9092, "type": "internal", "tls": False})
        expected = "listener scram :9092 is plaintext"
    elif defect == "protocol":
        config_map["data"].update(IMGSTREAM_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                                  IMGSTREAM_KAFKA_BOOTSTRAP="imgstream-kafka-bootstrap:9092")
        del config_map["data"]["IMGSTREAM_KAFKA_SSL_CA_FILE"]
        expected = "the job uses SASL_PLAINTEXT"
    elif defect == "no-ca":
        del config_map["data"]["IMGSTREAM_KAFKA_SSL_CA_FILE"]
        expected = "the job trusts no CA: it cannot verify the brokers"
    elif defect == "wrong-secret":
        volume["secret"]["secretName"] = "imgstream-clients-ca-cert"
        expected = "/etc/imgstream/kafka-ca/ca.crt is not from Strimzi's Secret imgstream-cluster-ca-cert"
    else:
        volume["secret"]["items"] = [{"key": "ca.p12", "path": "ca.crt"}]
        expected = "/etc/imgstream/kafka-ca/ca.crt is not the Secret's key ca.crt"
    assert expected in tls_problems(objects)
