"""The server's errors: one hierarchy under ``NeuralHumanError``. Libraries and the inference service raise these (never
HTTP status codes); ``server.http.errors`` maps each class to its HTTP status once, and commands print the message.

Every error carries a message ready for the user (what is wrong, the value, the fix), a snake_case ``code`` (the
API's error code) and, for bad input, the ``field`` at fault (a dotted request path such as ``body.poses``).
"""

from __future__ import annotations

import re


class NeuralHumanError(Exception):
    """Base of the server's own errors; ``field`` names the input at fault. ``code`` is the class name in snake_case
    (``UnknownActor`` -> ``unknown_actor``) unless a class or an instance sets another."""

    code = "error"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            cls.code = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()

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


class UnknownActor(NeuralHumanError):
    """No actor folder of that id under the actors root."""


class UnknownJob(NeuralHumanError):
    """No job of that id in the jobs folder."""


class FrameNotAvailable(NeuralHumanError):
    """A job frame that cannot be served: ``unknown_frame``, ``frame_not_ready`` or ``frame_failed``."""

    code = "unknown_frame"


class ActorBroken(NeuralHumanError):
    """An actor folder whose files cannot be loaded or do not fit together."""


class BodyModelMissing(NeuralHumanError):
    """The body model an actor needs (a licensed SMPL file) is not on this machine."""


class OutOfMemory(NeuralHumanError):
    """The GPU ran out of memory even after the other actors were unloaded."""


class ClientGone(NeuralHumanError):
    """The client of a request left before its turn in the model queue came: the work is dropped, not computed."""


class Busy(NeuralHumanError):
    """The model queue stayed busy longer than a caller waits."""


class TooManyJobs(NeuralHumanError):
    """The server keeps as many jobs as it may (none old enough to be removed), or its queue of jobs is full."""


class DiskFull(NeuralHumanError):
    """No room left on the disk for a job's files."""
