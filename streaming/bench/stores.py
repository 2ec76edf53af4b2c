"""Where the "fetch included" rows read the photos from: the local stack's S3 server (the real
path) or a folder through file:// (smoke tests, no servers)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streaming.bench.photos import BenchPhoto
from streaming.config import PipelineConfig, Secret
from streaming.fetch import Fetcher
from streaming.uris import ObjectRef, parse_uri

S3_BUCKET = "bench-preprocess"


@dataclass
class PhotoStore:
    kind: str  # "s3" or "file"
    config: PipelineConfig
    refs: dict[str, ObjectRef]  # photo name -> where it is

    def fetcher(self) -> Fetcher:
        return Fetcher(self.config).open()


def file_store(photos: list[BenchPhoto], folder: Path) -> PhotoStore:
    """The photos as files under `folder` (already written there), read through file://."""
    config = PipelineConfig(allowed_schemes=("file",), file_root=str(folder))
    refs = {p.name: parse_uri(f"file://{folder.resolve()}/{p.name}", config) for p in photos}
    return PhotoStore("file", config, refs)


def s3_store(photos: list[BenchPhoto]) -> PhotoStore:
    """The photos uploaded to the local stack's S3 server, bucket `bench-preprocess`.

    Raises RuntimeError with a hint when the server does not answer.
    """
    from streaming.stack import s3 as stack_s3
    from streaming.stack.layout import StackLayout

    layout = StackLayout.from_env()
    if not stack_s3.s3_healthy(layout):
        raise RuntimeError(f"no S3 server at {layout.s3_endpoint}: run `imgstream stack up` first "
                           "(or pass --store file)")
    client = stack_s3.s3_client(layout)
    stack_s3.ensure_bucket(layout, S3_BUCKET, client)
    for photo in photos:
        client.put_object(Bucket=S3_BUCKET, Key=f"photos/{photo.name}", Body=photo.data)
    config = PipelineConfig(s3_endpoint=layout.s3_endpoint, s3_access_key=Secret(layout.s3_access_key),
                            s3_secret_key=Secret(layout.s3_secret_key), allowed_buckets=(S3_BUCKET,))
    refs = {p.name: parse_uri(f"s3://{S3_BUCKET}/photos/{p.name}", config) for p in photos}
    return PhotoStore("s3", config, refs)
