"""The pinned jars of the local stack (`jars.lock`): read the lock, fetch from Maven Central, verify sha256.

The lock is a TSV: a header line, then `group artifact version classifier sha256 role` per jar.
The `kafka` rows are Maven's runtime closure of `org.apache.kafka:kafka_2.13` plus the log4j2
slf4j binding (a throwaway pom outside the repo, `mvn dependency:list -DincludeScope=runtime`);
the `s3proxy` and `flink-connector` rows are single self-contained jars.

    python -m streaming.stack.artifacts DEST [--role ROLE]
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

LOCK_PATH = Path(__file__).with_name("jars.lock")
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
ROLES = ("kafka", "s3proxy", "flink-connector")
LOCK_HEADER = ("group", "artifact", "version", "classifier", "sha256", "role")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """A jar could not be read from the lock, fetched, or verified."""


class LockError(ArtifactError):
    """`jars.lock` is malformed."""


class DownloadError(ArtifactError):
    """A jar could not be downloaded after retries."""


class ChecksumError(ArtifactError):
    """A jar's sha256 differs from the lock, even after one fresh download."""

    def __init__(self, jar: str, expected: str, actual: str) -> None:
        super().__init__(f"{jar}: sha256 {actual} does not match the lock's {expected}")
        self.jar = jar
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class JarSpec:
    """One pinned jar of the lock."""

    group: str
    artifact: str
    version: str
    classifier: str
    sha256: str
    role: str

    @property
    def filename(self) -> str:
        suffix = f"-{self.classifier}" if self.classifier else ""
        return f"{self.artifact}-{self.version}{suffix}.jar"

    @property
    def url(self) -> str:
        return f"{MAVEN_CENTRAL}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.filename}"

    @property
    def coordinate(self) -> str:
        classifier = f":{self.classifier}" if self.classifier else ""
        return f"{self.group}:{self.artifact}:{self.version}{classifier}"


def read_lock(path: Path = LOCK_PATH) -> tuple[JarSpec, ...]:
    """Parse and validate the lock file, in file order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != LOCK_HEADER:
        raise LockError(f"{path}: first line must be the header {LOCK_HEADER}")
    specs: list[JarSpec] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(LOCK_HEADER):
            raise LockError(f"{path}:{number}: expected {len(LOCK_HEADER)} tab-separated fields, got {len(fields)}")
        spec = JarSpec(*fields)
        if not all((spec.group, spec.artifact, spec.version)):
            raise LockError(f"{path}:{number}: group, artifact and version are required")
        if not _SHA256.fullmatch(spec.sha256):
            raise LockError(f"{path}:{number}: sha256 must be 64 lowercase hex digits")
        if spec.role not in ROLES:
            raise LockError(f"{path}:{number}: unknown role {spec.role!r} (known: {', '.join(ROLES)})")
        specs.append(spec)
    names = [s.filename for s in specs]
    if len(set(names)) != len(names):
        raise LockError(f"{path}: duplicate jar file names")
    return tuple(specs)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _retryable(error: BaseException) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code == 429 or error.code >= 500
    return isinstance(error, (urllib.error.URLError, http.client.HTTPException, OSError))


def download(url: str, target: Path, *, attempts: int = 4, backoff_s: float = 1.0, timeout_s: float = 60.0) -> None:
    """Fetch `url` into `target` via a temp file in the same folder and an atomic rename; retry network
    errors (tenacity, as `streaming.infer`: `attempts` in all, waits of `backoff_s` doubling)."""
    target.parent.mkdir(parents=True, exist_ok=True)

    def report(state: RetryCallState) -> None:
        print(f"  retrying {target.name} in {state.next_action.sleep:.0f}s after: {state.outcome.exception()}",
              file=sys.stderr)

    try:
        for attempt in Retrying(retry=retry_if_exception(_retryable), stop=stop_after_attempt(attempts),
                                wait=wait_exponential(multiplier=backoff_s), before_sleep=report, reraise=True):
            with attempt:
                _download_once(url, target, timeout_s)
    except Exception as error:  # noqa: BLE001 - every failure of the last (or a permanent) attempt
        raise DownloadError(f"{url}: {error}") from error


def _download_once(url: str, target: Path, timeout_s: float) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            shutil.copyfileobj(response, out, _CHUNK)
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fetch(spec: JarSpec, target: Path) -> None:
    started = time.monotonic()
    print(f"fetching {spec.coordinate} ...", file=sys.stderr, flush=True)
    download(spec.url, target)
    size_mb = target.stat().st_size / 1e6
    print(f"  {target.name}: {size_mb:.1f} MB in {time.monotonic() - started:.1f}s", file=sys.stderr)


def ensure_jars(dest: Path, role: str | None = None, *, lock: Sequence[JarSpec] | None = None) -> list[Path]:
    """Fetch the missing jars of `role` (all roles if None) into `dest`, verify every sha256, return the paths in lock order."""
    specs = read_lock() if lock is None else tuple(lock)
    if role is not None:
        if role not in ROLES:
            raise ArtifactError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
        specs = tuple(s for s in specs if s.role == role)
    dest.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for spec in specs:
        path = dest / spec.filename
        actual = ""
        for _ in range(2):  # the file as found (or a fresh download), then one fresh download
            if not path.exists():
                _fetch(spec, path)
            actual = sha256_of(path)
            if actual == spec.sha256:
                break
            print(f"  {spec.filename}: sha256 mismatch, removing it", file=sys.stderr)
            path.unlink()
        else:
            raise ChecksumError(spec.filename, spec.sha256, actual)
        paths.append(path)
    return paths


def classpath(jars: Sequence[Path]) -> str:
    return os.pathsep.join(str(j) for j in jars)


def java_executable() -> str:
    """The `java` to run the jars with: $JAVA_HOME/bin/java, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise ArtifactError("no java found (set JAVA_HOME or put java 17+ on PATH)")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streaming.stack.artifacts", description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="folder to hold the jars")
    parser.add_argument("--role", choices=ROLES, default=None, help="only this role's jars (default: all)")
    args = parser.parse_args(argv)
    try:
        for path in ensure_jars(args.dest, args.role):
            print(path)
    except ArtifactError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
