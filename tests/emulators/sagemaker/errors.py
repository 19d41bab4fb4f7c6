"""SageMaker's error shapes: what a handler raises and the server turns into the wire answer
(awsJson1_1: ``{"__type": CODE, "message": TEXT}``; the runtime's rest-json errors carry the
code in ``x-amzn-ErrorType`` and the body)."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400, **extra) -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.extra = code, message, status, extra


def validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


def not_found(kind: str, arn: str) -> ApiError:
    """What SageMaker answers for a missing model / endpoint configuration / endpoint."""
    return validation(f'Could not find {kind} "{arn}".')
