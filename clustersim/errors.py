"""API errors, raised anywhere in the server and written to clients as ``Status`` objects."""

from typing import Any


class ApiError(Exception):
    """A failed API call: the HTTP code and the ``Status`` a real API server would return."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        """Return the ``Status`` object for this error."""
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def _details(resource: str, name: str, group: str = "") -> dict[str, Any]:
    details = {"name": name, "kind": resource}
    if group:
        details["group"] = group
    return details


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    """Return the 404 for a missing object."""
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(resource, group)} "{name}" not found',
        _details(resource, name, group),
    )


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    """Return the 409 for creating an object whose name is taken."""
    return ApiError(
        409,
        "AlreadyExists",
        f'{_qualified(resource, group)} "{name}" already exists',
        _details(resource, name, group),
    )


def conflict(resource: str, name: str, group: str = "") -> ApiError:
    """Return the 409 for a write whose resourceVersion precondition no longer holds."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": the object '
        "has been modified; please apply your changes to the latest version and try again",
        _details(resource, name, group),
    )


def invalid(kind: str, name: str, field: str, message: str, group: str = "") -> ApiError:
    """Return the 422 for an object that fails validation."""
    details = {
        "name": name,
        "kind": kind,
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
    }
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {field}: {message}', details)


def bad_request(message: str) -> ApiError:
    """Return the 400 for a malformed request."""
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    """Return the 410 for a resourceVersion older than the watch history still held."""
    return ApiError(410, "Expired", message)
