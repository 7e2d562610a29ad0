"""Turning failures into messages a user can read: a ``gr.Error``, never a traceback.

Messages are plain text (API clients read them as they are; the page's toast sanitises what it
shows) and never carry a server path: an operating-system error shows the file's name only.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from ..images import ImageLoadError
from ..registry import RegistryError
from .uploads import UploadError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

# Failures whose message is written for the user (they name the input and the reason).
USER_ERRORS = (UploadError, RegistryError, ValueError, FileNotFoundError)


def unreadable(name: str, error: ImageLoadError) -> gr.Error:
    """The message for an upload that is not an image: '<name> is not a readable image: why'."""
    return user_error(f"{name} is not a readable image: {error.reason}")


def user_error(message: str) -> gr.Error:
    """A ``gr.Error`` showing ``message``, plain text."""
    return gr.Error(message, title="Cannot analyse this", print_exception=False)


def describe(exc: BaseException) -> str:
    """``exc`` in words without server paths (an ``OSError`` names its file by base name)."""
    if isinstance(exc, OSError) and exc.strerror:
        name = os.path.basename(os.fsdecode(exc.filename)) if exc.filename else ""
        return f"{name}: {exc.strerror}" if name else exc.strerror
    return str(exc)


def friendly(fn: F) -> F:
    """Run an event handler so that any failure reaches the user as a readable ``gr.Error``.

    Expected failures show their own message; anything else is logged with its traceback on the
    server and shown as one line naming the error, so the queue never hangs on it.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ImageLoadError as exc:
            raise unreadable(exc.source, exc) from None
        except USER_ERRORS as exc:
            raise user_error(describe(exc)) from None
        except Exception as exc:
            log.exception("%s failed", fn.__name__)
            raise user_error(
                f"internal error ({type(exc).__name__}: {describe(exc)}); the server log has "
                "the details"
            ) from None

    return wrapper  # type: ignore[return-value]
