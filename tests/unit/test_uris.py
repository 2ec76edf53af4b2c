"""parse_uri: the allowlists, file_root containment, and that it only ever raises UriNotAllowed."""
from __future__ import annotations

import dataclasses
import os
import posixpath
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.config import PipelineConfig
from streaming import netpolicy
from streaming.errors import AddressNotAllowed, UriNotAllowed, UriTooLong
from streaming.uris import ObjectRef, parse_uri, public_uri, redirect_target

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
    ("s3://bucket/a@b.jpg", ObjectRef("s3", "bucket", "a@b.jpg")),  # '@' in a key is no user info
    ("s3://bucket/user@example.com/a.jpg", ObjectRef("s3", "bucket", "user@example.com/a.jpg")),
    ("s3://bucket/a..b/c.d.jpg", ObjectRef("s3", "bucket", "a..b/c.d.jpg")),  # dots inside a segment
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
    ("s3://user:pa55word@bucket/key", "user info"),
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
def test_http_is_denied_by_default_even_when_the_scheme_is_allowed(scheme):
    uri = f"{scheme}://example.com/a.jpg"
    with pytest.raises(UriNotAllowed, match="not allowed"):
        parse_uri(uri, S3_ONLY)
    with pytest.raises(UriNotAllowed, match="allowed_hosts is empty"):
        parse_uri(uri, PipelineConfig(allowed_schemes=("s3", scheme)))
    allowed = PipelineConfig(allowed_schemes=("s3", scheme), allowed_hosts=("example.com",))
    assert parse_uri(uri, allowed) == ObjectRef(scheme, "example.com", "a.jpg")


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
    ("file://user@localhost/x.jpg", "user info"),
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


# -- http(s) -------------------------------------------------------------------------------
HTTP = PipelineConfig(allowed_schemes=("s3", "http", "https"),
                      allowed_hosts=("images.example.com", "*.cdn.example.net", "static.example.org:8080"))


@pytest.mark.parametrize("uri, expected", [
    ("https://images.example.com/a/b.jpg", ObjectRef("https", "images.example.com", "a/b.jpg")),
    ("HTTPS://Images.Example.COM./a.jpg?w=1&h=2#frag", ObjectRef("https", "images.example.com", "a.jpg?w=1&h=2")),
    ("http://images.example.com:80/x.jpg", ObjectRef("http", "images.example.com", "x.jpg")),
    ("https://a.b.cdn.example.net/x y/é.jpg", ObjectRef("https", "a.b.cdn.example.net", "x%20y/%C3%A9.jpg")),
    ("http://static.example.org:8080/p%2Fq", ObjectRef("http", "static.example.org:8080", "p%2Fq")),
    ("https://images.example.com", ObjectRef("https", "images.example.com", "")),
    ("https://images.example.com?x=1", ObjectRef("https", "images.example.com", "?x=1")),
])
def test_http_uris_parse(uri, expected):
    ref = parse_uri(uri, HTTP)
    assert ref == expected
    assert parse_uri(ref.uri, HTTP) == ref  # the canonical form parses to itself


@pytest.mark.parametrize("uri, error, reason", [
    ("https://evil.example.com/a.jpg", "uri_not_allowed", "not in allowed_hosts"),
    ("https://images.example.com:8443/a.jpg", "uri_not_allowed", "port 8443 is not in allowed_hosts"),
    ("http://static.example.org/a.jpg", "uri_not_allowed", "not in allowed_hosts"),
    ("https://cdn.example.net/a.jpg", "uri_not_allowed", "not in allowed_hosts"),
    ("https://user:pa55word@images.example.com/a.jpg", "uri_not_allowed", "user info"),
    ("https://images.example.com@evil.example.com/", "uri_not_allowed", "user info"),
    ("https://images.example.com\\@evil.example.com/", "uri_not_allowed", "user info"),
    ("https://images.example.com\\.evil.example.com/", "uri_not_allowed", "backslash"),
    ("https://images.example.com/a\x00.jpg", "uri_not_allowed", "control characters"),
    ("https:/images.example.com/a.jpg", "uri_not_allowed", "not an absolute URI"),
])
def test_bad_http_uris(uri, error, reason):
    with pytest.raises(UriNotAllowed, match=reason) as caught:
        parse_uri(uri, HTTP)
    assert caught.value.code == error and caught.value.stage == "parse"
    assert "pa55word" not in caught.value.message


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "10.1.2.3", "[::1]", "[::ffff:169.254.169.254]",
                                  "[fe80::1]", "0.0.0.0", "[64:ff9b::a9fe:a9fe]"])
def test_http_ip_literals_meet_the_address_guard_at_parse(host):
    config = PipelineConfig(allowed_schemes=("http",), allowed_hosts=("*",))
    with pytest.raises(AddressNotAllowed) as caught:
        parse_uri(f"http://{host}/latest/meta-data/", config)
    assert caught.value.code == "address_not_allowed" and caught.value.stage == "parse"


def test_trusted_networks_let_an_internal_literal_through():
    config = PipelineConfig(allowed_schemes=("http",), allowed_hosts=("10.1.2.3:8080",),
                            http_trusted_networks=("10.1.0.0/16",))
    assert parse_uri("http://10.1.2.3:8080/a.jpg", config) == ObjectRef("http", "10.1.2.3:8080", "a.jpg")


def test_uri_length_has_its_own_code():
    with pytest.raises(UriTooLong) as caught:
        parse_uri("s3://bucket/" + "k" * 3000, S3_ONLY)
    assert caught.value.code == "uri_too_long" and isinstance(caught.value, UriNotAllowed)


# -- S3 key prefixes -----------------------------------------------------------------------
PREFIXED = PipelineConfig(allowed_buckets=("images", "thumbs"), allowed_s3_prefixes=("images/public/", "thumbs/"))


@pytest.mark.parametrize("uri, ok", [
    ("s3://images/public/a.jpg", True), ("s3://images/public/sub/a.jpg", True), ("s3://thumbs/x.jpg", True),
    ("s3://images/private/a.jpg", False), ("s3://images/publicity.jpg", False),
    ("s3://images/public/../private/a.jpg", False), ("s3://images/public/./a.jpg", False),
    ("s3://images/public\\..\\private.jpg", False), ("s3://images/public/..", False),
])
def test_s3_key_prefixes(uri, ok):
    if ok:
        assert parse_uri(uri, PREFIXED).key.startswith(("public/", "x"))
    else:
        with pytest.raises(UriNotAllowed):
            parse_uri(uri, PREFIXED)


# -- keys that cannot escape (issue 12 item 7) ---------------------------------------------
_ESCAPING_KEYS = ["../private/secret.jpg", "a/../../private/x.jpg", "./a.jpg", "a/./b.jpg", "a/..", "..", ".",
                  "/double", "a//b.jpg", "a/", "a\\..\\b.jpg", "a\\b.jpg", "%2e%2e/private/x.jpg",
                  "%2E%2E/x.jpg", "a%2fb.jpg", "a%2F..%2Fb", "a/%2e/b", "%5c..%5cx", "%252e%252e/x.jpg"]


@pytest.mark.parametrize("config", [S3_ONLY, PipelineConfig(allowed_buckets=("samples",)),
                                    PipelineConfig(allowed_s3_prefixes=("samples/",))], ids=["any", "buckets", "prefixes"])
@pytest.mark.parametrize("key", _ESCAPING_KEYS)
def test_s3_keys_that_a_normalising_gateway_could_walk_are_always_refused(config, key):
    with pytest.raises(UriNotAllowed) as caught:
        parse_uri(f"s3://samples/{key}", config)
    assert caught.value.code == "uri_not_allowed"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("./\\%25eEfFcCa@:")), min_size=1, max_size=24))
def test_accepted_s3_keys_mean_the_same_to_a_decoding_normalising_gateway(key):
    """Whatever a gateway does (percent-decode once or twice, backslash as '/', normalise dot
    segments), an accepted key names the same object: the one the allowlists checked."""
    try:
        ref = parse_uri(f"s3://samples/{key}", PipelineConfig(allowed_buckets=("samples",)))
    except UriNotAllowed:
        return
    for seen in (ref.key, unquote(ref.key), unquote(unquote(ref.key))):
        seen = seen.replace("\\", "/")
        assert posixpath.normpath("/samples/" + seen) == "/samples/" + seen  # no dot or empty segment
        assert seen.count("/") == ref.key.count("/")  # no new separator


@pytest.mark.parametrize("uri", ["https://images.example.com/a/../b.jpg", "https://images.example.com/./b.jpg",
                                 "https://images.example.com/%2e%2e/b.jpg", "https://images.example.com/a/%2E",
                                 "https://images.example.com/a\\b.jpg", "https://images.example.com/.."])
def test_http_paths_with_dot_segments_or_backslashes_are_refused(uri):
    with pytest.raises(UriNotAllowed, match="segments or a backslash"):
        parse_uri(uri, HTTP)


@pytest.mark.parametrize("uri", ["https://images.example.com/a..b/c.jpg?x=../y", "https://images.example.com/p%2Fq",
                                 "https://images.example.com//a.jpg"])
def test_http_paths_without_dot_segments_pass(uri):
    assert parse_uri(uri, HTTP).authority == "images.example.com"


# -- user info is refused whatever form it takes (issue 12 item 8) -----------------------
@pytest.mark.parametrize("uri", [
    "https://svc:hunt/er2@images.example.com/a.jpg", "s3://AKIAX:sec#ret@bucket/key.jpg",
    "s3://AKIAX/a:secret@bucket/key.jpg", " https://u:pw@images.example.com/a.jpg",
    "https://u:pw@@images.example.com/a.jpg", "https://u:1?x@images.example.com/", "https://token@images.example.com/",
    "https://images.example.com/a:b@c.jpg",
])
def test_uris_that_may_hold_user_info_are_refused(uri):
    config = dataclasses.replace(HTTP, allowed_hosts=("*:*",))
    with pytest.raises(UriNotAllowed) as caught:
        parse_uri(uri, config)
    assert caught.value.code == "uri_not_allowed"
    assert public_uri(uri) != uri and "***@" in public_uri(uri)


# -- redirects -----------------------------------------------------------------------------
@pytest.mark.parametrize("location, expected", [
    ("/b.jpg", ObjectRef("https", "images.example.com", "b.jpg")),
    ("c.jpg", ObjectRef("https", "images.example.com", "dir/c.jpg")),
    ("https://x.cdn.example.net/d.jpg", ObjectRef("https", "x.cdn.example.net", "d.jpg")),
    ("//x.cdn.example.net/e.jpg", ObjectRef("https", "x.cdn.example.net", "e.jpg")),
])
def test_redirect_targets_are_joined_and_checked(location, expected):
    current = parse_uri("https://images.example.com/dir/a.jpg", HTTP)
    assert redirect_target(location, current, HTTP) == expected


@pytest.mark.parametrize("location, reason", [
    ("http://images.example.com/a.jpg", "https to http"),
    ("https://evil.example.com/", "not in allowed_hosts"),
    ("file:///etc/passwd", "other than http"),
    ("s3://images/a.jpg", "other than http"),
    ("gopher://images.example.com/", "other than http"),
    ("https://169.254.169.254/", "not in allowed_hosts"),
    ("https://user:pw@images.example.com/", "user info"),
    ("/a\r\nSet-Cookie: x=1", "control characters"),
])
def test_redirect_targets_are_refused(location, reason):
    current = parse_uri("https://images.example.com/dir/a.jpg", HTTP)
    config = dataclasses.replace(HTTP, allowed_schemes=("s3", "file", "http", "https"), file_root="/")
    with pytest.raises(UriNotAllowed, match=reason) as caught:
        redirect_target(location, current, config)
    assert caught.value.stage == "fetch" and caught.value.message.startswith("redirect refused")


@pytest.mark.parametrize("location", ["http://169.254.169.254/latest/meta-data/", "http://[::1]:8080/",
                                      "http://2130706433/", "http://10.0.0.1/"])
def test_redirects_to_forbidden_addresses_are_refused_even_when_any_host_is_allowed(location):
    config = PipelineConfig(allowed_schemes=("http",), allowed_hosts=("*:*",))
    current = parse_uri("http://images.example.com/a.jpg", config)
    with pytest.raises(UriNotAllowed) as caught:
        redirect_target(location, current, config)
    assert caught.value.code in ("address_not_allowed", "uri_not_allowed") and caught.value.stage == "fetch"


_HTTP_PROPERTY = PipelineConfig(allowed_schemes=("s3", "http", "https"), allowed_hosts=("*:*",), max_uri_chars=300)


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.builds(lambda scheme, rest: f"{scheme}://{rest}", st.sampled_from(["http", "https", "HTTP"]), st.text(max_size=80)),
    st.builds(lambda host, rest: f"http://{host}/{rest}",
              st.one_of(st.ip_addresses().map(lambda a: f"[{a}]" if a.version == 6 else str(a)),
                        st.text(alphabet="0123456789abcdefx.:[]@%", max_size=20)),
              st.text(max_size=20)),
))
def test_http_uris_are_refused_or_canonical_and_not_forbidden(uri):
    try:
        ref = parse_uri(uri, _HTTP_PROPERTY)
    except UriNotAllowed as exc:
        assert exc.message and exc.code in ("uri_not_allowed", "uri_too_long", "address_not_allowed")
        return
    assert ref.scheme in ("http", "https") and "@" not in ref.authority and "\\" not in ref.authority
    assert parse_uri(ref.uri, _HTTP_PROPERTY) == ref
    host = netpolicy.parse_authority(ref.authority, ref.scheme)
    if host.ip is not None:
        assert netpolicy.forbidden_reason(host.ip) is None


def test_only_an_s3_ref_has_a_bucket():
    assert parse_uri("s3://images/a.jpg", PipelineConfig(allowed_buckets=("images",))).bucket == "images"
    ref = parse_uri("https://images.example.com/a.jpg", HTTP)
    with pytest.raises(AttributeError, match="no bucket"):
        ref.bucket  # noqa: B018
