"""Turning failures into messages a user can read: a ``gr.Error``, never a traceback."""

from __future__ import annotations

import functools
import html
import logging
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
    """A ``gr.Error`` showing ``message`` as text (it may contain file names: escaped)."""
    return gr.Error(html.escape(message), title="Cannot analyse this", print_exception=False)


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
            raise user_error(str(exc)) from None
        except Exception as exc:
            log.exception("%s failed", fn.__name__)
            raise user_error(
                f"internal error ({type(exc).__name__}: {exc}); the server log has the details"
            ) from None

    return wrapper  # type: ignore[return-value]
