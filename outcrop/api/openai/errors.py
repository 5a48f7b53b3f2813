"""OpenAI's error shape for every failure of the door: `{"error": {"message", "type", "param", "code"}}`.

The platform raises AWS-named errors (errors.py); the door keeps their words and answers them with the
status and type an OpenAI client expects, so the SDKs raise the exception their users catch
(BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError, RateLimitError...).
"""

from __future__ import annotations

from typing import Any

from outcrop.errors import BedrockError, ValidationException
from outcrop.runtime.service import INVALID_MODEL_IDENTIFIER


class InvalidRequest(ValidationException):
    """A request this door refuses, naming the OpenAI field at fault in `param` (400)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.openai_code = code


class ModelNotFound(BedrockError):
    """The model a request names resolves to nothing this server serves (OpenAI's 404 model_not_found)."""

    status = 404
    aws_code = "ResourceNotFoundException"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.")
        self.param = "model"
        self.openai_code = "model_not_found"


class RouteNotFound(BedrockError):
    status = 404
    aws_code = "UnknownOperationException"


class MethodNotAllowed(BedrockError):
    status = 405
    aws_code = "UnknownOperationException"


#: Credentials that are missing or wrong: 401, OpenAI's AuthenticationError, where AWS answers 403.
_AUTHENTICATION = {"MissingAuthenticationTokenException": "missing_api_key",
                   "UnrecognizedClientException": "invalid_api_key",
                   "InvalidSignatureException": "invalid_signature"}
#: OpenAI's own codes where one means the same thing; other errors carry their AWS code.
_CODES = {"ThrottlingException": "rate_limit_exceeded", "ServiceQuotaExceededException": "quota_exceeded"}


def error_status(error: BedrockError) -> int:
    """The HTTP status this door answers `error` with."""
    if error.code in _AUTHENTICATION:
        return 401
    if isinstance(error, ValidationException) and error.message == INVALID_MODEL_IDENTIFIER:
        return 404
    return error.status


def error_body(error: BedrockError) -> dict[str, Any]:
    """The error as OpenAI writes one."""
    status = error_status(error)
    param = getattr(error, "param", None)
    code = getattr(error, "openai_code", None) or _AUTHENTICATION.get(error.code) or _CODES.get(error.code) \
        or error.code
    message = error.message
    if status == 404 and error.code == "ValidationException":  # the runtime's words for a model it does not know
        param, code = "model", "model_not_found"
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_denied"
    if status == 429:
        return "rate_limit_error"
    if status >= 500 or status in (408, 424):  # the model timed out or failed: the server's side
        return "server_error"
    return "invalid_request_error"
