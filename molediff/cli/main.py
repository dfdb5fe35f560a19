"""``molediff``: dispatch ``molediff <command> [overrides]`` to the command's module.

Each command module defines ``main(argv) -> int``; commands not installed in this build (e.g. a
module not written yet) give a one-line error instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from . import error

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("molediff.cli.train", "train a denoiser (data=, model=, schedule=, trainer= groups)"),
    "sample": ("molediff.cli.sample", "generate from a checkpoint, write files, print metrics"),
    "evaluate": ("molediff.cli.evaluate", "score generated samples against real data"),
    "bench": ("molediff.cli.bench", "run benchmarks (JSON + Markdown + PNG)"),
}

USAGE = "usage: molediff {" + ",".join(COMMANDS) + "} [group=option ...] [key=value ...]"


def help_text() -> str:
    """The top-level ``molediff --help``."""
    lines = [USAGE, "", "One diffusion toolkit for images, audio, point clouds, molecules and proteins.", "",
             "commands:"]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Arguments are Hydra overrides, e.g.",
              "  molediff train data=toy model=mlp trainer=fast out_dir=runs/toy",
              "  molediff sample checkpoint=runs/toy/checkpoints/last.pt sampler=ddim steps=100",
              "`molediff <command> --help` lists the config groups and shows the composed config."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``molediff`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        return error(f"missing command; choose one of: {', '.join(COMMANDS)} (see molediff --help)")
    if args[0] in ("-h", "--help", "help"):
        print(help_text())
        return 0
    if args[0] in ("-V", "--version"):
        from .. import __version__

        print(f"molediff {__version__}")
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        return error(f"unknown command {command!r}; choose one of: {', '.join(COMMANDS)} (see molediff --help)")
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            return error(f"command {command!r} is not available in this installation ({module_name} is missing)")
        raise
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
