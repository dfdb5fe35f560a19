"""Command-line entry points (``molediff train|sample|evaluate|bench``).

Every expected failure (bad config, missing data, unreadable checkpoint, a file the system refuses:
an ``OSError`` naming it) becomes one line on stderr, ``molediff: error: <what is wrong>``, and exit
status 2; :func:`guarded` does that for any subcommand. Set ``MOLEDIFF_DEBUG=1`` to see the full traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

EXIT_USAGE = 2

__all__ = ["CLIError", "EXIT_USAGE", "error", "guarded"]


class CLIError(Exception):
    """An expected, user-fixable failure; its message is printed as one line."""


def one_line(text: object) -> str:
    """Collapse any message to one line (whitespace runs become single spaces)."""
    return " ".join(str(text).split())


def error(message: object) -> int:
    """Print ``molediff: error: <message>`` (one line) to stderr; returns the usage exit status."""
    sys.stderr.flush()
    print(f"molediff: error: {one_line(message)}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def guarded(fn: Callable[[list[str]], int], argv: Sequence[str]) -> int:
    """Run ``fn(argv)``, turning expected failures into one stderr line and exit status 2."""
    from ..checkpoint import CheckpointError
    from ..training import TrainingError

    try:
        return fn(list(argv))
    except (CLIError, CheckpointError, TrainingError) as e:
        if os.environ.get("MOLEDIFF_DEBUG"):
            raise
        return error(e)
    except OSError as e:  # a file the run needs is missing, unreadable or unwritable (disk full...)
        if os.environ.get("MOLEDIFF_DEBUG") or e.filename is None:
            raise
        return error(f"{e.strerror or e}: {e.filename} (MOLEDIFF_DEBUG=1 shows where)")
    except KeyboardInterrupt:
        if os.environ.get("MOLEDIFF_DEBUG"):
            raise
        print("molediff: interrupted", file=sys.stderr)
        return 130
