"""The typed error tree. Every failure of a request ends as an error record with a stable code.

`Retryable` errors (timeouts, throttling, a server that is down) may succeed if tried again;
`Permanent` ones (bad input, a missing object) never will. Codes are part of the results
topic's contract: add new ones, never rename.
"""
from __future__ import annotations


class PipelineError(Exception):
    """Root of the project's errors. `code` is stable; `stage` says where it happened."""

    code = "internal_error"
    stage = "unknown"

    def __init__(self, message: str, *, stage: str | None = None):
        super().__init__(message)
        self.message = message
        if stage is not None:
            self.stage = stage


class Permanent(PipelineError):
    """Trying again cannot help."""


class Retryable(PipelineError):
    """Trying again later may help."""


# -- the event itself (stage: parse) --------------------------------------------------
class InvalidEvent(Permanent):
    """The event is not JSON, not an object, or misses or mistypes a field."""
    code, stage = "invalid_event", "parse"


class EventTooLarge(Permanent):
    """The event is bigger than max_event_bytes."""
    code, stage = "event_too_large", "parse"


class UriNotAllowed(Permanent):
    """The URI's scheme, bucket or path is outside the allowlist."""
    code, stage = "uri_not_allowed", "parse"


class UriTooLong(UriNotAllowed):
    """The URI is longer than max_uri_chars."""
    code, stage = "uri_too_long", "parse"


class AddressNotAllowed(UriNotAllowed):
    """An http(s) host is, or resolves to, a loopback/private/link-local/reserved/multicast
    address outside http_trusted_networks (SSRF guard; checked before connecting, every hop)."""
    code, stage = "address_not_allowed", "fetch"


# -- fetching (stage: fetch) -----------------------------------------------------------
class ObjectNotFound(Permanent):
    """No object at the URI (S3 NoSuchKey/NoSuchBucket, HTTP 404, missing file)."""
    code, stage = "object_not_found", "fetch"


class AccessDenied(Permanent):
    """The credentials may not read the object."""
    code, stage = "access_denied", "fetch"


class ObjectTooLarge(Permanent):
    """The object is bigger than max_object_bytes (checked on headers and while streaming)."""
    code, stage = "object_too_large", "fetch"


class TooManyRedirects(Permanent):
    """An http(s) fetch was redirected more than max_redirects times."""
    code, stage = "too_many_redirects", "fetch"


class FetchFailed(Retryable):
    """The store timed out, throttled or failed (5xx) after all retries."""
    code, stage = "fetch_failed", "fetch"


# -- decoding (stage: decode) ----------------------------------------------------------
class UnsupportedImage(Permanent):
    """The bytes are not an image format we decode."""
    code, stage = "unsupported_image", "decode"


class CorruptImage(Permanent):
    """The image is truncated or damaged."""
    code, stage = "corrupt_image", "decode"


class ImageTooLarge(Permanent):
    """The image header declares more pixels than max_pixels (decompression bomb guard)."""
    code, stage = "image_too_large", "decode"


class DecodeTimeout(Permanent):
    """Decoding and resizing the image took longer than max_decode_ms."""
    code, stage = "decode_timeout", "decode"


# -- inference (stage: infer) ----------------------------------------------------------
class InferenceUnavailable(Retryable):
    """Triton is unreachable, overloaded or timed out after all retries."""
    code, stage = "inference_unavailable", "infer"


class RequestTimeout(Retryable):
    """The request as a whole took longer than request_timeout_s. Its stage, "pipeline", names the
    whole path (parse to result), not one step of it."""
    code, stage = "request_timeout", "pipeline"


class InferenceFailed(Permanent):
    """Triton rejected the request (bad shape, model error)."""
    code, stage = "inference_failed", "infer"


class ModelNotFound(InferenceFailed):
    """Triton does not serve the configured model_name/model_version (a configuration error: not retried)."""
    code, stage = "model_not_found", "infer"


class ModelNotAllowed(Permanent):
    """The event names a model that is neither `model_name` nor in `allowed_models`."""
    code, stage = "model_not_allowed", "parse"


class ModelChanged(Retryable):
    """The served model's contract changed (a new version with another input size or output) while
    this request was prepared for the old one; the pipeline prepares it again once, then gives up."""
    code, stage = "model_changed", "infer"


class ModelContractInvalid(Permanent):
    """The served model's config has no readable `imgstream_contract` parameter (import the model
    with `imgstream models import`), or its tensors disagree with it."""
    code, stage = "model_contract_invalid", "infer"


# -- the result itself (stage: result) -------------------------------------------------
class ResultTooLarge(Permanent):
    """The result would exceed events.MAX_RESULT_BYTES (e.g. a model with huge labels); a small
    error result is sent in its place."""
    code, stage = "result_too_large", "result"
