"""Domain errors that servicers raise; the server interceptor maps them to gRPC status codes.

Domain code raises these instead of touching grpc, so it can be tested without a server.
The message is what the caller sees: say what was wrong and how to fix it.
"""

from __future__ import annotations


class VitrineError(Exception):
    """Base class; `code_name` is the grpc.StatusCode name the interceptor answers with."""

    code_name = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(VitrineError):
    code_name = "INVALID_ARGUMENT"


class NotFound(VitrineError):
    code_name = "NOT_FOUND"


class FailedPrecondition(VitrineError):
    code_name = "FAILED_PRECONDITION"


class ResourceExhausted(VitrineError):
    code_name = "RESOURCE_EXHAUSTED"


class AlreadyExists(VitrineError):
    code_name = "ALREADY_EXISTS"


class Unavailable(VitrineError):
    code_name = "UNAVAILABLE"


class DeadlineExceeded(VitrineError):
    code_name = "DEADLINE_EXCEEDED"
