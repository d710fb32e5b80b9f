"""The error catalog: every error a client can see, with its code, HTTP status and OpenAI type.

This is the one place where statuses are chosen. Code raises `HanseError(catalog_entry, ...)`;
the HTTP edge turns it into `{"error": {"code", "message", "details", "type", "param"}}`.

    HanseError
      code: ErrorCode   (AUTH_1xxx, BILLING_2xxx, INFERENCE_3xxx, VALIDATION_4xxx, SYSTEM_9xxx)
      message: str      (safe to show: never a key, an upstream secret or a stack trace)
      details: dict     (machine-readable specifics, e.g. the parameter or the limit)
      param: str | None (the request parameter at fault, as OpenAI reports it)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One catalog entry."""

    code: str
    status: int
    type: str
    retryable: bool
    summary: str


def _entry(code: str, status: int, type_: str, summary: str, retryable: bool = False) -> ErrorCode:
    return ErrorCode(code=code, status=status, type=type_, retryable=retryable, summary=summary)


_AUTH = "authentication_error"
_PERM = "permission_error"
_INVALID = "invalid_request_error"
_NOT_FOUND = "not_found_error"
_RATE = "rate_limit_error"
_SERVER = "server_error"

# Authentication and authorisation.
AUTH_MISSING_KEY = _entry("AUTH_1007", 401, _AUTH, "No API key was provided.")
AUTH_INVALID_KEY = _entry("AUTH_1008", 401, _AUTH, "The API key is invalid, expired or revoked.")
AUTH_ADMIN_REQUIRED = _entry("AUTH_1010", 401, _AUTH, "This operation needs the admin credential.")
AUTH_SCOPE = _entry("AUTH_1015", 403, _PERM, "The API key lacks the scope this endpoint needs.")
VAULT_KEY_MISSING = _entry("AUTH_1030", 401, _AUTH, "This needs the vault key (`X-Vault-Key`).")
VAULT_KEY_INVALID = _entry("AUTH_1031", 403, _PERM, "The vault key is invalid.")
VAULT_KEY_THROTTLED = _entry(
    "AUTH_1032", 429, _RATE, "Too many wrong vault keys; retry after `Retry-After`.", retryable=True
)
RATE_LIMITED = _entry(
    "AUTH_1028", 429, _RATE, "The account's rate limit is reached; retry later.", retryable=True
)

# Billing.
_QUOTA = "insufficient_quota"
OUT_OF_ENERGY = _entry("BILLING_2001", 402, _QUOTA, "Not enough energy for this request.")
OUT_OF_CREDITS = _entry("BILLING_2003", 402, _QUOTA, "Not enough credits for this request.")

# Inference.
UNKNOWN_MODEL = _entry("INFERENCE_3001", 404, _NOT_FOUND, "The model does not exist.")
PROVIDER_REJECTED = _entry("INFERENCE_3102", 400, _INVALID, "The provider rejected the request.")
ALL_PROVIDERS_FAILED = _entry(
    "INFERENCE_3103", 502, _SERVER, "Every provider failed; retry later.", retryable=True
)
NO_ROUTE = _entry(
    "INFERENCE_3104", 503, _SERVER, "No provider of the model matches the request's filters."
)
UPSTREAM_TIMEOUT = _entry("INFERENCE_3107", 504, _SERVER, "The provider timed out.", retryable=True)
UPSTREAM_RATE_LIMITED = _entry(
    "INFERENCE_3108", 429, _RATE, "The provider is rate-limited.", retryable=True
)
NO_VISION = _entry("INFERENCE_3201", 400, _INVALID, "The model does not accept images.")
NO_TOOLS = _entry("INFERENCE_3202", 400, _INVALID, "The model does not support function calling.")
NO_LOGPROBS = _entry(
    "INFERENCE_3204", 400, _INVALID, "The model does not return log probabilities."
)
# What OpenAI's schema accepts beyond text, images and function tools, on a model without it.
NO_AUDIO_INPUT = _entry("INFERENCE_3210", 400, _INVALID, "The model does not accept audio.")
NO_FILE_INPUT = _entry("INFERENCE_3211", 400, _INVALID, "The model does not accept files.")
NO_CUSTOM_TOOLS = _entry(
    "INFERENCE_3212", 400, _INVALID, "The model does not support custom tools."
)
NO_AUDIO_OUTPUT = _entry("INFERENCE_3213", 400, _INVALID, "The model does not answer with audio.")
# The message keeps OpenAI's wording and names `context_length_exceeded` (OpenAI's code), which is
# what LiteLLM ("maximum context length is") and langchain-openai look for in the error text.
CONTEXT_EXCEEDED = _entry(
    "INFERENCE_3207",
    400,
    _INVALID,
    "The input exceeds the model's maximum context length (context_length_exceeded).",
)
CONTENT_FILTERED = _entry(
    "INFERENCE_3208", 400, _INVALID, "The provider's content filter refused it."
)
SCHEMA_NOT_MET = _entry(
    "INFERENCE_3209",
    502,
    _SERVER,
    "The answer did not match the response_format schema, even after a repair.",
    retryable=True,
)

# Validation of what the client sent.
INVALID_JSON = _entry("VALIDATION_4001", 400, _INVALID, "The body is not a JSON object.")
MISSING_REQUIRED = _entry("VALIDATION_4002", 400, _INVALID, "`model` or `messages` is missing.")
INVALID_TYPE = _entry("VALIDATION_4003", 400, _INVALID, "A parameter has the wrong type.")
OUT_OF_RANGE = _entry("VALIDATION_4004", 400, _INVALID, "A parameter is out of its range.")
INVALID_VALUE = _entry("VALIDATION_4005", 400, _INVALID, "A parameter has an invalid value.")
MISSING_FIELD = _entry("VALIDATION_4006", 400, _INVALID, "A required field is missing.")
UNKNOWN_PARAMETER = _entry(
    "VALIDATION_4007", 400, _INVALID, "The request has an unknown parameter."
)
NOT_SUPPORTED_YET = _entry(
    "VALIDATION_4008", 400, _INVALID, "The parameter is recognised but not supported yet."
)
LIMIT_EXCEEDED = _entry("VALIDATION_4101", 400, _INVALID, "The request exceeds a configured limit.")
NOT_AN_IMAGE = _entry("VALIDATION_4201", 400, _INVALID, "An image input is not a valid image.")
IMAGE_TOO_LARGE = _entry("VALIDATION_4202", 400, _INVALID, "An image input is too large.")
IMAGE_FETCH_REFUSED = _entry(
    "VALIDATION_4203", 400, _INVALID, "The gateway refuses to fetch this image URL."
)
IMAGE_FETCH_FAILED = _entry("VALIDATION_4204", 400, _INVALID, "An image URL could not be fetched.")
NOT_FOUND = _entry("VALIDATION_4040", 404, _NOT_FOUND, "No such resource.")
VAULT_ITEM_NOT_FOUND = _entry(
    "VALIDATION_4041", 404, _NOT_FOUND, "No blueprint or skill with this id in the account's vault."
)
METHOD_NOT_ALLOWED = _entry("VALIDATION_4050", 405, _INVALID, "Method not allowed on this path.")
BODY_TOO_LARGE = _entry("VALIDATION_4130", 413, _INVALID, "The request body is too large.")
REQUEST_TIMEOUT = _entry(
    "VALIDATION_4080", 408, _INVALID, "The request did not arrive in time.", retryable=True
)
HEADERS_TOO_LARGE = _entry(
    "VALIDATION_4310", 431, _INVALID, "The request line and headers are too large."
)

# The gateway itself.
INTERNAL = _entry("SYSTEM_9001", 500, _SERVER, "Unexpected failure inside the gateway.", True)
VAULT_ITEM_DAMAGED = _entry(
    "SYSTEM_9002", 500, _SERVER, "A vault item failed its integrity check and cannot be opened."
)
RATE_LIMIT_UNAVAILABLE = _entry(
    "SYSTEM_9003",
    503,
    _SERVER,
    "Rate limits cannot be checked: the shared store (Redis) is unreachable.",
    retryable=True,
)
NOT_READY = _entry(
    "SYSTEM_9004", 503, _SERVER, "The gateway is not ready: a dependency is unreachable.", True
)


class HanseError(Exception):
    """An error with a catalog code; safe to show to the client as it is."""

    def __init__(
        self,
        error: ErrorCode,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.error = error
        self.message = message or error.summary
        self.details = details or {}
        self.param = param
        self.headers = headers or {}
        super().__init__(f"{error.code}: {self.message}")

    def body(self) -> dict[str, Any]:
        """The `{"error": {...}}` object, as the wire carries it."""
        return {
            "error": {
                "code": self.error.code,
                "message": self.message,
                "details": self.details,
                "type": self.error.type,
                "param": self.param,
            }
        }
