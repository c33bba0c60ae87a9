"""User-facing errors: one line that says what is wrong and how to fix it."""

from __future__ import annotations


class DearError(Exception):
    """An input or configuration problem the user can fix; printed as one line, exit code 2."""


class Terminated(BaseException):
    """SIGTERM (kill, timeout) in the CLI's process, raised like Ctrl-C's KeyboardInterrupt so that the
    run stops where it is and removes its unfinished outputs (`__main__.sigterm_raises`). A
    BaseException: no `except Exception` may take it for a failure of the work and carry on."""


def one_line(exc: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker re-raised it.

    torch re-raises worker exceptions as the same type with the worker traceback folded into the
    message; the original message is its last line.
    """
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(("dear_exp.", "DearError")) and ": " in last else last
    return " ".join(text.split())
