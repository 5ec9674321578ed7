"""The command layer: the console entry point ``nnunet-lesionloss`` and one module per family of sub-commands.

Each module parses and checks its options (``cli.options``), calls the library and prints; it is the only
place that knows the command line. Nothing below this layer imports from it.

- ``setup``: env, doctor, config, record-repeats, synth
- ``inspect``: inspect
- ``evaluate``: evaluate, cv-summary
- ``compare``: compare
- ``froc``: froc
- ``postprocess``: remove-small (and its --sweep), merge-by-volume
- ``threshold``: choose-threshold, apply-threshold
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: the command modules, in the order their commands are listed by --help
COMMAND_MODULES = ("setup", "inspect", "evaluate", "compare", "froc", "postprocess", "threshold")
#: commands of earlier releases -> their name now (answered with an error that names it)
RENAMED_COMMANDS = {"detection": "froc"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-lesionloss",
        description="Lesion-aware losses for nnU-Net v2: set-up checks, synthetic data, lesion-wise evaluation.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"nnunet_lesionloss.cli.{name}")
        except ImportError as error:  # a broken optional dependency must keep env/doctor usable
            if name == "setup":
                raise
            print(f"warning: the {name} commands are unavailable ({error})", file=sys.stderr)
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in RENAMED_COMMANDS:
        print(
            f"error: the command {argv[0]!r} was renamed: use 'nnunet-lesionloss {RENAMED_COMMANDS[argv[0]]}' "
            "(same options)",
            file=sys.stderr,
        )
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
