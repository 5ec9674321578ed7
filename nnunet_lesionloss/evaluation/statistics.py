"""The statistics of the evaluation's comparisons, in one place: the case bootstrap (percentile intervals,
resample counts, the CI of a mean paired difference), the Wilcoxon signed-rank test of paired differences and
Holm's correction across the runs compared. ``compare`` and the FROC analysis use these functions; nothing
here reads or writes files."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "percentile_interval",
    "case_resample_counts",
    "case_resample_weights",
    "bootstrap_ci",
    "wilcoxon_p",
    "holm",
]

#: resamples of compare's paired bootstrap (the FROC analysis uses picai_eval's 1000, FrocSettings)
BOOTSTRAP_RESAMPLES = 10_000


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """The central ``level`` percentile interval of the finite ``values`` (a bootstrap distribution);
    None with fewer than two finite values."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def _case_resample_chunks(n_cases: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The case bootstrap's resample counts, a block of resamples at a time ([rows, n_cases], bounded memory).
    numpy's generator draws a block of rows as the same numbers as the rows one after the other, so the
    resamples do not depend on the block size."""
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, 2_000_000 // max(n_cases, 1)))
    for start in range(0, resamples, block):
        rows = min(block, resamples - start)
        draws = rng.integers(0, n_cases, size=(rows, n_cases))
        offsets = (np.arange(rows) * n_cases)[:, None]  # one bincount for the block: row r counts in its own range
        counts = np.bincount((draws + offsets).ravel(), minlength=rows * n_cases)
        yield counts.reshape(rows, n_cases).astype(np.float64)


def case_resample_counts(n_cases: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """For each resample of a case bootstrap (cases drawn with replacement, seeded), how often each case
    was drawn (a float array of n_cases), one resample at a time."""
    for block in _case_resample_chunks(n_cases, resamples, seed):
        yield from block


def case_resample_weights(n_cases: int, resamples: int, seed: int) -> np.ndarray:
    """The resamples of :func:`case_resample_counts` (same seed, same resamples) as one array
    ``[resamples, n_cases]``, for statistics computed on all resamples at once."""
    blocks = list(_case_resample_chunks(n_cases, resamples, seed))
    return np.concatenate(blocks) if blocks else np.zeros((0, n_cases))


def bootstrap_ci(
    differences: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean of ``differences`` (cases resampled with replacement);
    None for fewer than 2 cases. Seeded: the same inputs give the same interval."""
    differences = np.asarray(differences, dtype=np.float64)
    n = len(differences)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, min(resamples, 2_000_000 // n))  # bounded memory: chunk x n indices at a time
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = differences[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    interval = percentile_interval(means, level)
    return None if interval is None else (interval[0], interval[1])


def wilcoxon_p(differences: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences (scipy's defaults: zero
    differences dropped, exact distribution for small samples without ties); None for fewer than 2 cases."""
    from scipy.stats import wilcoxon

    differences = np.asarray(differences, dtype=np.float64)
    if len(differences) < 2:  # no test of one difference (scipy refuses a single zero difference)
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-zero differences: scipy warns and returns p = 1
        return float(wilcoxon(differences).pvalue)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down correction of the p-values of one family (None values are not in the family)."""
    indexed = sorted((p, k) for k, p in enumerate(p_values) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, k) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[k] = running
    return adjusted
