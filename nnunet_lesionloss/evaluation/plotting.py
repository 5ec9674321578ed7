"""The one plotting module of the evaluation: matplotlib without a display, and every figure saved the same
way (title, legend, tight layout, written atomically as a 120 dpi PNG)."""

from __future__ import annotations

from pathlib import Path

from nnunet_lesionloss.evaluation import io

__all__ = ["pyplot", "save_figure", "write_figure"]


def pyplot():
    """matplotlib.pyplot on the Agg backend (headless: no display on training servers or CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, ax, title: str, path: Path) -> Path:
    """Title and legend on ``ax``, then ``fig`` written to ``path`` (PNG, atomically) and closed."""
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return write_figure(fig, path)


def write_figure(fig, path: Path) -> Path:
    """``fig`` as it is laid out, written to ``path`` (PNG, 120 dpi, atomically) and closed."""
    io.atomic_write(path, lambda temporary: fig.savefig(temporary, dpi=120, format="png"))
    pyplot().close(fig)
    return path
