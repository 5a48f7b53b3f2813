"""Errors named exactly as AWS names them, raised by any layer and rendered by the API door.

This module imports nothing from the package so that every layer, from `platform/` to `api/`, can
raise a ValidationException by name without an upward import. One exception here is not AWS's:
`Cancelled`, for work whose caller has gone away, which no response ever carries.
"""

from __future__ import annotations


class BedrockError(Exception):
    """An error with the AWS error code (the class name) and the HTTP status AWS answers with."""

    status: int = 400
    #: Set by a subclass named for our own use (DatasetError) to the AWS error code it stands for.
    aws_code: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        return self.aws_code or type(self).__name__


class ValidationException(BedrockError):
    status = 400


class SerializationException(BedrockError):
    """A body that is not the JSON the operation takes (what AWS answers for malformed JSON)."""

    status = 400


class AccessDeniedException(BedrockError):
    status = 403


class UnrecognizedClientException(BedrockError):
    status = 403


class InvalidSignatureException(BedrockError):
    status = 403


class MissingAuthenticationTokenException(BedrockError):
    """An unsigned request (what AWS's front door answers before any service sees it)."""

    status = 403


class ResourceNotFoundException(BedrockError):
    status = 404


class ConflictException(BedrockError):
    status = 400


class ServiceQuotaExceededException(BedrockError):
    status = 400


class TooManyTagsException(BedrockError):
    status = 400


class ThrottlingException(BedrockError):
    """Retried with backoff by the SDKs (a throttling error in every retry mode)."""

    status = 429


class ModelTimeoutException(BedrockError):
    status = 408


class ModelNotReadyException(BedrockError):
    """The model is still loading. Modeled as retryable in botocore's bedrock-runtime model, so the SDKs
    retry it (boto3's standard mode: 3 attempts with backoff; legacy mode retries every 429)."""

    status = 429


class ModelErrorException(BedrockError):
    status = 424


class InternalServerException(BedrockError):
    status = 500


class ServiceUnavailableException(BedrockError):
    status = 503


class UnknownOperationException(BedrockError):
    """A path and method that no Bedrock operation has (what AWS answers for an unknown route)."""

    status = 404


class Cancelled(Exception):
    """Work called off because its caller went away (the client hung up before the answer).

    Not an AWS error and not a BedrockError: nobody is left to receive it, so it never becomes a
    response. The scheduler raises it in a cancelled generation's consumer; the API ends the request
    quietly and the usage record says Cancelled."""


class NotImplementedException(BedrockError):
    """A real Bedrock operation that Outcrop does not serve yet; named so a client sees why."""

    status = 501
