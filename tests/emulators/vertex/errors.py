"""Google's error shape (google.rpc.Status over HTTP/JSON, AIP-193): what a handler raises and
the server sends as ``{"error": {"code": HTTP, "message": TEXT, "status": CANONICAL}}``, plus
the ``google.rpc.Status`` a failed long-running operation carries (``{"code": GRPC, ...}``)."""

from __future__ import annotations

#: canonical status -> (HTTP status, gRPC code), as google.rpc.Code maps them.
STATUSES = {
    "INVALID_ARGUMENT": (400, 3), "FAILED_PRECONDITION": (400, 9), "OUT_OF_RANGE": (400, 11),
    "UNAUTHENTICATED": (401, 16), "PERMISSION_DENIED": (403, 7), "NOT_FOUND": (404, 5),
    "ABORTED": (409, 10), "ALREADY_EXISTS": (409, 6), "RESOURCE_EXHAUSTED": (429, 8),
    "CANCELLED": (499, 1), "INTERNAL": (500, 13), "UNIMPLEMENTED": (501, 12),
    "UNAVAILABLE": (503, 14), "DEADLINE_EXCEEDED": (504, 4),
}


class ApiError(Exception):
    def __init__(self, status: str, message: str, details: list | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or []

    @property
    def http(self) -> int:
        return STATUSES[self.status][0]

    def body(self) -> dict:
        error = {"code": self.http, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def rpc_status(self) -> dict:
        """The ``google.rpc.Status`` of a failed operation (its ``error`` field)."""
        return {"code": STATUSES[self.status][1], "message": self.message}


def invalid(message: str) -> ApiError:
    return ApiError("INVALID_ARGUMENT", message)


def not_found(kind: str, name: str) -> ApiError:
    return ApiError("NOT_FOUND", f'{kind} "{name}" not found.')
