"""parse_uri: the allowlists, file_root containment, and that it only ever raises UriNotAllowed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.config import PipelineConfig
from streaming.errors import UriNotAllowed
from streaming.uris import ObjectRef, parse_uri

S3_ONLY = PipelineConfig()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "cat.jpg").write_bytes(b"x")
    (tmp_path / "outside.jpg").write_bytes(b"secret")
    return tmp_path / "root"


def file_config(root: Path, **overrides: object) -> PipelineConfig:
    return PipelineConfig(allowed_schemes=("s3", "file"), file_root=str(root), **overrides)


@pytest.mark.parametrize("uri, expected", [
    ("s3://bucket/cat.jpg", ObjectRef("s3", "bucket", "cat.jpg")),
    ("S3://bucket/a/b/c.jpg", ObjectRef("s3", "bucket", "a/b/c.jpg")),
    ("s3://my.bucket-1/k%20?x#y", ObjectRef("s3", "my.bucket-1", "k%20?x#y")),  # keys are literal
    ("s3://bucket/ünï cödé.jpg", ObjectRef("s3", "bucket", "ünï cödé.jpg")),
    ("s3://bucket//double", ObjectRef("s3", "bucket", "/double")),
])
def test_s3_uris_parse(uri, expected):
    assert parse_uri(uri, S3_ONLY) == expected
    assert expected.uri == f"s3://{expected.bucket}/{expected.key}"


@pytest.mark.parametrize("uri, reason", [
    ("", "not an absolute URI"),
    ("bucket/key.jpg", "not an absolute URI"),
    ("://bucket/key", "not an absolute URI"),
    ("3s://bucket/key", "not an absolute URI"),
    ("gs://bucket/key", "scheme 'gs' is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("http://example.com/a.jpg", "scheme 'http' is not allowed"),
    ("s3://bucket", "no object key"),
    ("s3://bucket/", "no object key"),
    ("s3:///key", "invalid S3 bucket name"),
    ("s3://ab/key", "invalid S3 bucket name"),
    ("s3://-bucket/key", "invalid S3 bucket name"),
    ("s3://bucket..x/key", "invalid S3 bucket name"),
    ("s3://user:pa55word@bucket/key", "invalid S3 bucket name"),
    ("s3://bucket:9000/key", "invalid S3 bucket name"),
    ("s3://bucket/key\nwith-newline", "control characters"),
    ("s3://bucket/key\x00", "control characters"),
    ("s3://bucket/" + "k" * 1025, "limit 1024"),
    ("s3://bucket/" + "é" * 600, "limit 1024"),  # 1200 UTF-8 bytes
])
def test_bad_uris_are_refused_with_a_reason(uri, reason):
    with pytest.raises(UriNotAllowed, match=reason) as caught:
        parse_uri(uri, S3_ONLY)
    assert caught.value.code == "uri_not_allowed"
    assert "pa55word" not in caught.value.message


def test_uri_length_limit():
    config = PipelineConfig(max_uri_chars=30)
    assert parse_uri("s3://bucket/" + "k" * 18, config).key == "k" * 18
    with pytest.raises(UriNotAllowed, match="31 characters, limit 30"):
        parse_uri("s3://bucket/" + "k" * 19, config)


def test_bucket_allowlist():
    config = PipelineConfig(allowed_buckets=("images", "thumbs"))
    assert parse_uri("s3://images/a.jpg", config).bucket == "images"
    with pytest.raises(UriNotAllowed, match="bucket 'other' is not in allowed_buckets"):
        parse_uri("s3://other/a.jpg", config)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_http_is_refused_even_when_allowed(scheme):
    uri = f"{scheme}://example.com/a.jpg"
    with pytest.raises(UriNotAllowed, match="not allowed"):
        parse_uri(uri, S3_ONLY)
    with pytest.raises(UriNotAllowed, match="not implemented yet"):
        parse_uri(uri, PipelineConfig(allowed_schemes=("s3", scheme)))


# -- file:// -----------------------------------------------------------------------------
def test_file_inside_root_parses_to_its_real_path(root):
    path = root / "sub" / "cat.jpg"
    expected = ObjectRef("file", "", os.path.realpath(path))
    assert parse_uri(f"file://{path}", file_config(root)) == expected
    assert parse_uri(f"file://localhost{path}", file_config(root)) == expected
    assert parse_uri(f"file://{root}/sub/./x/../cat.jpg", file_config(root)) == expected
    assert parse_uri(f"file://{root}/sub/c%61t.jpg", file_config(root)) == expected
    assert parse_uri(expected.uri, file_config(root)) == expected


def test_file_needs_the_scheme_and_a_root(root):
    uri = f"file://{root}/sub/cat.jpg"
    with pytest.raises(UriNotAllowed, match="scheme 'file' is not allowed"):
        parse_uri(uri, PipelineConfig(file_root=str(root)))
    with pytest.raises(UriNotAllowed, match="need file_root"):
        parse_uri(uri, PipelineConfig(allowed_schemes=("file",)))


@pytest.mark.parametrize("suffix", [
    "/../outside.jpg",
    "/sub/../../outside.jpg",
    "/%2e%2e/outside.jpg",
    "/sub/%2E%2E/%2E%2E/outside.jpg",
    "",  # the root itself is not an object inside it
])
def test_file_dotdot_cannot_escape_root(root, suffix):
    with pytest.raises(UriNotAllowed, match="outside file_root"):
        parse_uri(f"file://{root}{suffix}", file_config(root))


def test_file_symlink_cannot_escape_root(root):
    (root / "link.jpg").symlink_to(root.parent / "outside.jpg")
    (root / "linkdir").symlink_to(root.parent)
    for path in ("link.jpg", "linkdir/outside.jpg"):
        with pytest.raises(UriNotAllowed, match="outside file_root"):
            parse_uri(f"file://{root}/{path}", file_config(root))


def test_file_symlink_inside_root_resolves(root):
    (root / "alias.jpg").symlink_to(root / "sub" / "cat.jpg")
    ref = parse_uri(f"file://{root}/alias.jpg", file_config(root))
    assert ref.key == os.path.realpath(root / "sub" / "cat.jpg")


def test_file_root_prefix_is_not_containment(root):
    sibling = root.parent / (root.name + "-evil")
    sibling.mkdir()
    with pytest.raises(UriNotAllowed, match="outside file_root"):
        parse_uri(f"file://{sibling}/a.jpg", file_config(root))


@pytest.mark.parametrize("uri, reason", [
    ("file://evil.example/etc/passwd", "must not name a host"),
    ("file://user@localhost/x.jpg", "must not name a host"),
    ("file:///x.jpg?download=1", "query or fragment"),
    ("file:///x.jpg#frag", "query or fragment"),
    ("file:relative.jpg", "not an absolute URI"),
    ("file:///x%00.jpg", "control characters"),
    ("file:///x%ff.jpg", "not valid UTF-8"),
])
def test_malformed_file_uris(root, uri, reason):
    with pytest.raises(UriNotAllowed, match=reason):
        parse_uri(uri, file_config(root))


# -- property ----------------------------------------------------------------------------
_PROPERTY_ROOT = Path(os.path.realpath(os.getcwd()))
_PROPERTY_CONFIG = PipelineConfig(allowed_schemes=("s3", "file", "https"),
                                  allowed_buckets=("bucket", "images"),
                                  file_root=str(_PROPERTY_ROOT), max_uri_chars=300)
_uris = st.one_of(
    st.text(max_size=400),
    st.builds(lambda scheme, rest: f"{scheme}://{rest}",
              st.sampled_from(["s3", "S3", "file", "FILE", "http", "https", "gs", ""]),
              st.text(max_size=120)),
    st.builds(lambda rest: f"file://{_PROPERTY_ROOT}/{rest}",
              st.text(alphabet=st.sampled_from("./%2eE5cé\\~#?:@"), max_size=40)),
    st.builds(lambda rest: f"s3://bucket/{rest}", st.text(max_size=40)),
)


@settings(max_examples=500, deadline=None)
@given(_uris)
def test_parse_uri_returns_a_ref_or_raises_uri_not_allowed(uri):
    try:
        ref = parse_uri(uri, _PROPERTY_CONFIG)
    except UriNotAllowed as exc:
        assert exc.message
        return
    assert isinstance(ref, ObjectRef)
    assert ref.scheme in ("s3", "file")
    if ref.scheme == "s3":
        assert ref.bucket in ("bucket", "images") and ref.key
    else:
        assert Path(ref.key).is_relative_to(_PROPERTY_ROOT) and Path(ref.key) != _PROPERTY_ROOT
