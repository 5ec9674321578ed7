"""What every command does the same way: usage errors (exit status 2, nothing written), the one line that
explains the exit status, the note about predictions without a reference, and the runner of the commands that
go case by case."""

from __future__ import annotations

import sys

from nnunet_lesionloss.evaluation.io import CaseError

__all__ = ["USAGE_ERRORS", "exit_with", "fail", "note_ignored_predictions", "run_case_command"]


#: errors a command reports with exit status 2, before (or instead of) evaluating anything
USAGE_ERRORS = (OSError, ValueError)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return exit_with(2, "stopped before any result was written (the error above)")


def exit_with(code: int, reason: str) -> int:
    """The exit status, explained in one line on stderr."""
    print(f"exit status {code}: {reason}", file=sys.stderr)
    return code


def note_ignored_predictions(ignored: list[str], folder: str) -> None:
    """Predictions no reference claims: not an error, but never hidden (not even by --quiet)."""
    if ignored:
        print(
            f"note: {len(ignored)} predictions in {folder} without a reference are ignored: "
            + ", ".join(ignored[:5])
            + (" ..." if len(ignored) > 5 else ""),
            file=sys.stderr,
        )


def run_case_command(args) -> int:
    """Run ``args.postprocess(args)`` (a command that goes case by case and returns the number of failed cases)
    and turn its result or its usage error into the exit status."""
    try:
        failed = int(args.postprocess(args) or 0)
    except (*USAGE_ERRORS, CaseError) as error:
        return fail(str(error))
    if failed:
        return exit_with(1, f"{failed} case(s) failed (listed above); the other cases were written")
    return exit_with(0, "done")
