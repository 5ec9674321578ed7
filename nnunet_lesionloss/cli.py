"""Console entry point ``nnunet-lesionloss``: one sub-command per job.

Each family of sub-commands lives beside the code it drives and registers itself here through a
``register(subparsers)`` function that adds its parsers and sets ``func`` on them.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-lesionloss",
        description="Lesion-aware losses for nnU-Net v2: set-up checks, synthetic data, lesion-wise evaluation.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    from nnunet_lesionloss import setup_cli

    setup_cli.register(subparsers)
    try:
        from nnunet_lesionloss import inspection
    except ImportError as error:  # evaluation extras broken: keep env/doctor usable
        print(f"warning: inspect unavailable ({error})", file=sys.stderr)
    else:
        inspection.register(subparsers)
    try:
        from nnunet_lesionloss.evaluation import cli as evaluation_cli
    except ImportError as error:  # evaluation extras broken: keep env/doctor usable
        print(f"warning: evaluation commands unavailable ({error})", file=sys.stderr)
    else:
        evaluation_cli.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
