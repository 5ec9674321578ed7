"""The one parallel map of the evaluation: run a per-case function over many cases, in a process pool when
asked, with a progress bar, in the order of the cases; and the one way a case reports an error nobody
foresaw (so that one broken case never stops the others, and its reason says where it broke)."""

from __future__ import annotations

import multiprocessing
import os
import traceback

__all__ = ["run_parallel", "unexpected_error_reason"]


def unexpected_error_reason(error: Exception) -> str:
    """A case's reason for an error nobody foresaw: its type, its text and the function it came from."""
    return f"{type(error).__name__}: {error} ({traceback.extract_tb(error.__traceback__)[-1].name})"


def _call(function_and_arguments):
    function, arguments = function_and_arguments
    return function(*arguments)


def run_parallel(function, jobs: list[tuple], num_processes: int = 1, progress: bool = True, desc: str = "cases"):
    """``[function(*job) for job in jobs]`` in that order, in a pool of ``num_processes`` when > 1, with a
    progress bar. ``function`` must be a module-level function (the pool pickles it by name)."""
    from tqdm import tqdm

    if num_processes <= 1 or len(jobs) <= 1:
        return [function(*job) for job in tqdm(jobs, desc=desc, disable=not progress, unit="case")]
    # fork keeps start-up cheap; each worker only reads files and returns plain results
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with context.Pool(min(num_processes, len(jobs))) as pool:
        calls = [(function, job) for job in jobs]
        return list(tqdm(pool.imap(_call, calls), total=len(jobs), desc=desc, disable=not progress, unit="case"))
