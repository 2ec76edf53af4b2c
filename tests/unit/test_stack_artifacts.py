"""The jar lock and `ensure_jars`, without network."""
from __future__ import annotations

import hashlib
import io
import urllib.error
from pathlib import Path

import pytest

from streaming.stack import artifacts
from streaming.stack.artifacts import (
    ROLES, ArtifactError, ChecksumError, DownloadError, JarSpec, LockError, ensure_jars, read_lock,
)


def _no_network(url: str, target: Path, **_: object) -> None:
    raise AssertionError(f"unexpected download of {url}")


def _spec(payload: bytes, name: str = "good", role: str = "kafka") -> JarSpec:
    return JarSpec("org.example", name, "1.0", "", hashlib.sha256(payload).hexdigest(), role)


def test_lock_parses_with_valid_rows() -> None:
    specs = read_lock()
    assert specs
    for spec in specs:
        assert len(spec.sha256) == 64 and all(c in "0123456789abcdef" for c in spec.sha256)
        assert spec.role in ROLES
        assert spec.url.startswith(artifacts.MAVEN_CENTRAL + "/") and spec.url.endswith(".jar")
    assert len({s.filename for s in specs}) == len(specs)


def test_every_role_is_present_and_pinned() -> None:
    by_role = {role: [s for s in read_lock() if s.role == role] for role in ROLES}
    assert all(by_role.values())
    kafka = {(s.group, s.artifact): s.version for s in by_role["kafka"]}
    assert kafka[("org.apache.kafka", "kafka_2.13")] == "4.1.1"
    assert kafka[("org.apache.kafka", "kafka-clients")] == "4.1.1"
    assert ("org.scala-lang", "scala-library") in kafka
    # a logging backend, so the broker writes a log
    assert {("org.apache.logging.log4j", "log4j-core"), ("org.apache.logging.log4j", "log4j-slf4j-impl")} <= kafka.keys()
    assert [s.artifact for s in by_role["s3proxy"]] == ["s3proxy"]
    assert [(s.artifact, s.version) for s in by_role["flink-connector"]] == [("flink-sql-connector-kafka", "5.0.0-2.2")]


@pytest.mark.parametrize("row, message", [
    ("g\ta\t1\t\tabc\tkafka", "sha256"),
    (f"g\ta\t1\t\t{'0' * 64}\tzookeeper", "unknown role"),
    (f"g\ta\t1\t{'0' * 64}\tkafka", "fields"),
])
def test_read_lock_rejects_bad_rows(tmp_path: Path, row: str, message: str) -> None:
    lock = tmp_path / "jars.lock"
    lock.write_text("\t".join(artifacts.LOCK_HEADER) + "\n" + row + "\n")
    with pytest.raises(LockError, match=message):
        read_lock(lock)


def test_corrupt_jar_is_refetched_once_then_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, = [s for s in read_lock() if s.role == "flink-connector"]
    (tmp_path / spec.filename).write_bytes(b"not a jar")
    calls: list[str] = []

    def corrupt_download(url: str, target: Path, **_: object) -> None:
        calls.append(url)
        target.write_bytes(b"still not a jar")

    monkeypatch.setattr(artifacts, "download", corrupt_download)
    with pytest.raises(ChecksumError) as raised:
        ensure_jars(tmp_path, "flink-connector")
    assert raised.value.jar == spec.filename and spec.filename in str(raised.value)
    assert calls == [spec.url]
    assert not (tmp_path / spec.filename).exists()


def test_corrupt_jar_is_repaired_by_a_good_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _spec(b"good bytes")
    (tmp_path / good.filename).write_bytes(b"bad bytes")
    monkeypatch.setattr(artifacts, "download", lambda url, target, **_: target.write_bytes(b"good bytes"))
    assert ensure_jars(tmp_path, lock=[good]) == [tmp_path / good.filename]
    assert (tmp_path / good.filename).read_bytes() == b"good bytes"


def test_verified_jars_are_not_downloaded_and_keep_lock_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = [_spec(b"b", "bbb"), _spec(b"a", "aaa"), _spec(b"s", "s3", role="s3proxy")]
    for spec, payload in zip(specs, (b"b", b"a", b"s")):
        (tmp_path / spec.filename).write_bytes(payload)
    monkeypatch.setattr(artifacts, "download", _no_network)
    assert ensure_jars(tmp_path, "kafka", lock=specs) == [tmp_path / "bbb-1.0.jar", tmp_path / "aaa-1.0.jar"]
    with pytest.raises(ArtifactError, match="unknown role"):
        ensure_jars(tmp_path, "zookeeper", lock=specs)


def test_download_retries_network_errors_and_renames_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failures = [urllib.error.URLError("connection reset"), TimeoutError("slow")]

    def flaky_urlopen(url: str, timeout: float) -> io.BytesIO:
        if failures:
            raise failures.pop(0)
        return io.BytesIO(b"payload")

    monkeypatch.setattr(artifacts.urllib.request, "urlopen", flaky_urlopen)
    target = tmp_path / "x.jar"
    artifacts.download("https://example.invalid/x.jar", target, backoff_s=0)
    assert target.read_bytes() == b"payload"
    assert [p.name for p in tmp_path.iterdir()] == ["x.jar"]


def test_download_does_not_retry_a_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def not_found(url: str, timeout: float) -> io.BytesIO:
        calls.append(url)
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)  # type: ignore[arg-type]

    monkeypatch.setattr(artifacts.urllib.request, "urlopen", not_found)
    with pytest.raises(DownloadError, match="404"):
        artifacts.download("https://example.invalid/x.jar", tmp_path / "x.jar", backoff_s=0)
    assert len(calls) == 1 and list(tmp_path.iterdir()) == []
