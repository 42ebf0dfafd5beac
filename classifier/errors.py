"""The one error tree of shortflow.

Every error a user can cause derives from :class:`ShortflowError` and carries a one-line
message that names what is wrong and, where it helps, what to do. The CLI turns these into
exit code 2 plus that line; the API turns them into problem+json with a 4xx status.
"""

from __future__ import annotations

__all__ = [
    "ShortflowError",
    "CaptureError",
    "ModelError",
    "EnforcementError",
    "DatasetError",
    "PolicyError",
    "RecordingError",
    "RecordingNotFound",
]


class ShortflowError(Exception):
    """Base of every error shortflow raises on purpose."""


class CaptureError(ShortflowError):
    """A capture file cannot be read: missing, not a capture, damaged, unknown link type.

    ``path`` names the file and ``offset`` the byte offset of the bad record, when known.
    """

    def __init__(self, path: str, reason: str, offset: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.offset = offset
        where = f"{path}" if offset is None else f"{path} at byte {offset}"
        super().__init__(f"{where}: {reason}")


class ModelError(ShortflowError):
    """A model artifact is missing, tampered with, or built for another feature schema."""


class EnforcementError(ShortflowError):
    """The firewall or DNS sinkhole could not be set up or changed."""


class DatasetError(ShortflowError):
    """A dataset manifest or trace is invalid (bad row, missing file, hash mismatch)."""


class PolicyError(ShortflowError):
    """A policy file is invalid; the running policy stays in force."""


class RecordingError(ShortflowError):
    """A recording of a client's traffic cannot be started or changed (bad client address,
    duration or label; the client is recorded already; the recordings folder is full)."""


class RecordingNotFound(RecordingError):
    """No recording has this id."""
