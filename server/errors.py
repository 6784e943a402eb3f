"""The server's errors: one hierarchy under ``NeuralHumanError``. Libraries and the inference service raise these (never
HTTP status codes); ``server.http.errors`` maps each class to its HTTP status once, and commands print the message.

Every error carries a message ready for the user (what is wrong, the value, the fix), a snake_case ``code`` (the
API's error code) and, for bad input, the ``field`` at fault (a dotted request path such as ``body.poses``).
"""

from __future__ import annotations


class NeuralHumanError(Exception):
    """Base of the server's own errors; ``code`` defaults to the class's, ``field`` names the input at fault."""

    code = "error"

    def __init__(self, message: str, field: str | None = None, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class InvalidInput(NeuralHumanError, ValueError):
    """A request or file value that cannot be used (wrong shape, out of range, inconsistent); ``field`` names it."""

    code = "invalid_request"


class InvalidActorId(InvalidInput):
    """An actor id that is not a plain folder name (it could leave the actors folder)."""

    code = "invalid_actor_id"


class UnknownActor(NeuralHumanError):
    code = "unknown_actor"


class UnknownJob(NeuralHumanError):
    code = "unknown_job"


class FrameNotAvailable(NeuralHumanError):
    """A job frame that cannot be served: ``unknown_frame``, ``frame_not_ready`` or ``frame_failed``."""

    code = "unknown_frame"


class ActorBroken(NeuralHumanError):
    """An actor folder whose files cannot be loaded or do not fit together."""

    code = "actor_broken"


class BodyModelMissing(NeuralHumanError):
    """The body model an actor needs (a licensed SMPL file) is not on this machine."""

    code = "body_model_missing"


class OutOfMemory(NeuralHumanError):
    code = "out_of_memory"


class Busy(NeuralHumanError):
    code = "busy"


class DiskFull(NeuralHumanError):
    code = "disk_full"
