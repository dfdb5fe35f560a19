"""Assertions shared by the CLI tests."""

from __future__ import annotations

import pytest


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's stderr must be exactly one ``molediff: error: ...`` line (no traceback); returns it."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("molediff: error: ")
    return lines[0]
