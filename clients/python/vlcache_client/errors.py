"""Typed errors: every failed call raises an Error that keeps the gRPC status code and the
server's message (docs/API.md, "Errors", says when each code comes)."""
import grpc


class Error(Exception):
    """A failed call: `code` (a grpc.StatusCode) and `message` (the server's words)."""

    def __init__(self, code, message):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class InvalidArgument(Error):
    """The request is malformed; change it."""


class Unauthenticated(Error):
    """A bearer token is required and was missing or wrong."""


class PermissionDenied(Error):
    """The session belongs to another token."""


class NotFound(Error):
    """An unknown, expired, evicted or deleted session (or pipeline)."""


class FailedPrecondition(Error):
    """A turn is already running on the session."""


class ResourceExhausted(Error):
    """The queue is full, all sessions are busy, or the prompt exceeds the KV pool."""


class DeadlineExceeded(Error):
    """The call's deadline passed."""


class Cancelled(Error):
    """The call was cancelled."""


class Unavailable(Error):
    """The model is loading or the server drains or stops: retry, on another replica."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def from_rpc_error(e):
    """The Error for a grpc.RpcError (sync or asyncio)."""
    code = e.code()
    return _BY_CODE.get(code, Error)(code, e.details() or "")
