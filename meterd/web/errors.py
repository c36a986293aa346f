"""The API's error model: every failure is a status, a snake_case code and a sentence."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def bad_request(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def unauthorized(message: str = "a valid bearer token is required") -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="meterd"'})


def forbidden(message: str = "these credentials do not give access to this resource") -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(code: str, message: str) -> ApiError:
    return ApiError(404, code, message)
