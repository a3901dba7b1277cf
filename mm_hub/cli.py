"""The one error boundary of mm_hub's command lines (``python -m training.train``, ``training.push``, ``training.index``,
``training.ensemble``, ``training.space``, ``python app.py``).

Each command's ``main(argv)`` raises, so tests and callers see the error itself; run as a program, it goes through
`run`: a user error (bad input or config, a file or folder that cannot be read, the Hub refusing or out of reach) is
one line, ``error: ...``, on stderr and exit status 2; anything else is a bug and keeps its traceback.
``MM_HUB_TRACEBACK=1`` shows the traceback of a user error too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from huggingface_hub.errors import StrictDataclassError

# What a person can fix: values (ValueError, TypeError; a config field of the wrong kind), files, folders and the
# network (OSError: the Hub's HTTP errors, a model that cannot be loaded, offline mode, a refused token).
USER_ERRORS = (ValueError, TypeError, OSError, StrictDataclassError)
USAGE_ERROR = 2


def fail(message: str) -> NoReturn:
    """Print ``error: message`` (on one line) to stderr and exit with status 2."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def run(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> Any:
    """``main(argv)`` inside the error boundary (see the module docstring); returns what it returns.

    Raises:
        SystemExit: status 2 after a user error, 130 after Ctrl-C.
    """
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except USER_ERRORS as error:
        if os.environ.get("MM_HUB_TRACEBACK"):
            raise
        fail(str(error) or type(error).__name__)


__all__ = ["USAGE_ERROR", "USER_ERRORS", "fail", "run"]
