"""The protocol's error type: what an error frame carries, as a Python exception.

An error frame's metadata is ``{"code": int, "name": str, "message": str, "details":
{...}}`` (``docs/protocol.md``, "Errors"). :class:`WireError` converts to and from that
form, so a server raises one and a client gets the same one back.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from spark_ext.wire.kinds import FATAL_ERRORS, RETRYABLE_ERRORS, ErrorCode


class WireError(Exception):
    """An error with a protocol error code, a message and JSON-able details.

    Attributes:
        code: the numeric code; an :class:`ErrorCode` when this build knows it, else the
            raw int from the peer (newer peers may send codes we do not know).
        name: the code's name (``"DUPLICATE_KEY"``), kept even for unknown codes.
        message: human-readable text naming what went wrong.
        details: JSON-able context such as ``table``, ``column``, ``value``.
    """

    def __init__(
        self,
        code: ErrorCode | int,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        try:
            code = ErrorCode(code)
        except ValueError:
            pass  # unknown to this build: keep the number, the peer's name says more
        self.code: ErrorCode | int = code
        self.name: str = name or (code.name if isinstance(code, ErrorCode) else f"ERROR_{int(code)}")
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(f"{self.name}: {message}")

    @property
    def fatal(self) -> bool:
        """Whether the connection must be closed after this error. O(1)."""
        return self.code in FATAL_ERRORS

    @property
    def retryable(self) -> bool:
        """Whether the request may succeed when sent again (see kinds). O(1)."""
        return self.code in RETRYABLE_ERRORS

    def to_metadata(self) -> dict[str, Any]:
        """The error frame metadata. O(size of details)."""
        return {
            "code": int(self.code),
            "name": self.name,
            "message": self.message,
            "details": _jsonable(self.details),
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "WireError":
        """Rebuild an error from error frame metadata; tolerant of missing fields. O(1).

        A peer that sends a broken error frame still yields a usable error (code
        INTERNAL) rather than a second exception that would hide the first.
        """
        code = metadata.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            code = ErrorCode.INTERNAL
        name = metadata.get("name")
        message = metadata.get("message")
        details = metadata.get("details")
        return cls(
            code,
            message if isinstance(message, str) else "(no message)",
            details if isinstance(details, dict) else None,
            name=name if isinstance(name, str) and name else None,
        )

    @classmethod
    def from_exception(cls, exc: BaseException) -> "WireError":
        """Map any exception to a wire error. O(size of details).

        Engine errors (``spark_ext.exceptions``) carry a ``code`` *name* such as
        ``"DUPLICATE_KEY"`` and a ``details`` dict; they are matched by duck typing, so
        the wire layer stays free of the engine's exception module. Anything else is
        INTERNAL with the exception's type and text (never a traceback: that is for the
        server's log).
        """
        if isinstance(exc, WireError):
            return exc
        code_name = getattr(exc, "code", None)
        message = getattr(exc, "message", None)
        if not isinstance(message, str):
            message = str(exc) or type(exc).__name__
        details = getattr(exc, "details", None)
        if isinstance(code_name, str) and code_name in ErrorCode.__members__:
            return cls(ErrorCode[code_name], message, details if isinstance(details, dict) else None)
        return cls(ErrorCode.INTERNAL, f"{type(exc).__name__}: {message}")


class FrameError(WireError):
    """A frame could not be read: the connection must be answered and closed.

    Raised by :class:`spark_ext.wire.frames.FrameReader`. ``request_id`` and ``kind``
    are those of the offending header when it could be parsed (else 0), so the error
    reply can still be addressed to the request.
    """

    def __init__(
        self,
        code: ErrorCode | int,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        request_id: int = 0,
        kind: int = 0,
    ) -> None:
        super().__init__(code, message, details)
        self.request_id = request_id
        self.kind = kind


def _jsonable(value: Any) -> Any:
    """Details are free-form; make sure encoding them can never fail. O(size)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # strict JSON has no NaN or Infinity
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)
