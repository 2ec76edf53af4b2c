"""S3Proxy on loopback with a filesystem backend, plus the boto3 helpers the stack uses."""
from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

from streaming.stack.artifacts import java_executable
from streaming.stack.layout import StackLayout
from streaming.stack.process import ServiceSpec, loopback_opener

SERVICE_NAME = "s3proxy"
JVM_OPTS = (
    "-Xms64m", "-Xmx256m", "-XX:MaxMetaspaceSize=192m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
    "-Dlogback.statusListenerClass=ch.qos.logback.core.status.NopStatusListener",  # no logback self-report
)


def properties_path(layout: StackLayout) -> Path:
    return layout.data_dir("s3") / "s3proxy.properties"


def blob_dir(layout: StackLayout) -> Path:
    """One sub-folder per bucket."""
    return layout.data_dir("s3") / "blobs"


def s3proxy_properties(layout: StackLayout) -> dict[str, str]:
    return {
        "s3proxy.endpoint": layout.s3_endpoint,
        "s3proxy.authorization": "aws-v2-or-v4",
        "s3proxy.identity": layout.s3_access_key,
        "s3proxy.credential": layout.s3_secret_key,
        "jclouds.provider": "filesystem-nio2",
        "jclouds.filesystem.basedir": str(blob_dir(layout)),
    }


def write_properties(layout: StackLayout) -> Path:
    """Write the properties file and the blob folder (idempotent). Returns the properties path."""
    blob_dir(layout).mkdir(parents=True, exist_ok=True)
    path = properties_path(layout)
    text = "".join(f"{key}={value}\n" for key, value in s3proxy_properties(layout).items())
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def s3_healthy(layout: StackLayout) -> bool:
    """True if the endpoint answers HTTP at all (an anonymous request gets 403: that is up)."""
    opener = loopback_opener()
    try:
        with opener.open(layout.s3_endpoint + "/", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def s3_service(layout: StackLayout, jar: Path) -> ServiceSpec:
    """The S3Proxy process; writes its properties file under the data dir."""
    props = write_properties(layout)
    return ServiceSpec(
        name=SERVICE_NAME,
        argv=(java_executable(), *JVM_OPTS, "-jar", str(jar), "--properties", str(props)),
        cwd=layout.data_dir("s3"),
        health=lambda: s3_healthy(layout),
        ready_timeout_s=90.0,
    )


def s3_client(layout: StackLayout) -> Any:
    """A boto3 S3 client for the local endpoint: path-style, us-east-1, SigV4, short timeouts."""
    import boto3
    from botocore.config import Config

    config = Config(
        region_name="us-east-1",
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        connect_timeout=2,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "standard"},
        # boto3 >= 1.36 adds CRC checksums and aws-chunked trailers by default; only send them when required.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client(
        "s3",
        endpoint_url=layout.s3_endpoint,
        aws_access_key_id=layout.s3_access_key,
        aws_secret_access_key=layout.s3_secret_key,
        config=config,
    )


def ensure_bucket(layout: StackLayout, name: str, client: Any = None) -> bool:
    """Create the bucket unless it exists. True if it was created."""
    from botocore.exceptions import ClientError

    s3 = client or s3_client(layout)
    try:
        s3.head_bucket(Bucket=name)
        return False
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        s3.create_bucket(Bucket=name)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False
        raise
    return True


def upload_dir(layout: StackLayout, bucket: str, prefix: str, folder: Path, client: Any = None) -> list[str]:
    """Upload every file under `folder` (recursively, sorted) to `bucket/prefix/<relative path>`; returns the s3:// URIs."""
    s3 = client or s3_client(layout)
    base = prefix.strip("/")
    uris: list[str] = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        key = f"{base}/{relative}" if base else relative
        s3.upload_file(str(path), bucket, key)
        uris.append(f"s3://{bucket}/{key}")
    return uris
