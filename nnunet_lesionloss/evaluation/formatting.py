"""How the evaluation prints numbers in its tables (Markdown, console): one formatter, so every table shows a
value as its JSON holds it, rounded the same way."""

from __future__ import annotations

import math

__all__ = ["format_number", "format_with_interval", "format_p_value", "ignored_predictions_lines", "markdown_cell"]


def format_number(value, digits: int | None = 4, whole: bool = False) -> str:
    """A table cell: "–" for None, NaN or ±inf; an int (or an integral float of at least 100, or with
    ``whole`` any integral float) in full, never in exponent notation (1003275, not 1.00328e+06); any other
    number with ``digits`` decimals. ``digits`` None: a value someone set (a threshold, a factor, an FP limit, a
    spacing) as its JSON holds it, never rounded: the shortest text that reads back the same (0.1, 2.5, 1e-12),
    an integral value without decimals (1003275, 1)."""
    if value is None or isinstance(value, bool):
        return "–" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if not math.isfinite(value):  # a numpy float
        return "–"
    if value.is_integer() and (whole or abs(value) >= 100 or digits is None):
        return f"{value:.0f}"
    return repr(value) if digits is None else f"{value:.{digits}f}"


def format_with_interval(value, interval, digits: int = 3) -> str:
    """``value [low, high]`` (the interval left out when there is none)."""
    text = format_number(value, digits)
    if not interval:
        return text
    return f"{text} [{format_number(interval[0], digits)}, {format_number(interval[1], digits)}]"


def format_p_value(p: float | None) -> str:
    """A p-value: "–" when there is no test, "<0.001" below 0.001, else three decimals."""
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown_cell(text) -> str:
    """Any text (a case name, a reason) as one cell of a Markdown table: ``|`` escaped and line breaks made
    spaces, so a case named ``a|b`` stays one cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def ignored_predictions_lines(names) -> list[str]:
    """The lines of a Markdown report that name the predictions no reference claims (none: no line)."""
    if not names:
        return []
    return [f"{len(names)} prediction(s) without a reference, left out: " + ", ".join(map(markdown_cell, names)), ""]
