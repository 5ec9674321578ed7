"""The labels of nnU-Net's dataset.json: label and region values, the ignore label, the values a label map may
hold, and nnU-Net's summary key of a label or region. Every value is checked here (an integer, an ignore label of
its own), so that no command reads a contradictory dataset.json in silence."""

from __future__ import annotations


def label_value(name: str, value) -> int:
    """A label value of dataset.json: a non-negative integer (1.0 and "1" are 1, as nnU-Net's ``int()`` reads them),
    never 1.5 read as 1 nor true as 1."""
    integral = (
        isinstance(value, int)
        or (isinstance(value, float) and value.is_integer())
        or (isinstance(value, str) and value.isascii() and value.isdigit())
    )
    if isinstance(value, bool) or not integral or int(value) < 0:
        raise ValueError(f"dataset.json's label {name!r} has the value {value!r}: a label value is an integer >= 0")
    return int(value)


def labels_from_dataset_json(dataset: dict) -> dict[str, tuple[int, ...]]:
    """Evaluated label or region name -> label values, from nnU-Net's ``labels`` (regions: lists); ValueError for
    a value that is no label value, and for an ignore label that is no integer or is another label's value."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict):
        raise ValueError("dataset.json has no 'labels' dictionary")
    result = {}
    for name, value in labels.items():
        if name == "ignore":
            continue
        members = value if isinstance(value, (list, tuple)) else [value]
        values = tuple(label_value(name, v) for v in members)
        if values == (0,) or name == "background":
            continue
        result[name] = values
    ignore_label(dataset, set().union(*result.values()) if result else set())
    return result


def ignore_label(dataset: dict, label_values: set[int] | None = None) -> int | None:
    """nnU-Net's ignore label of a dataset.json (``labels["ignore"]``), or None. It must be one integer (nnU-Net's
    LabelManager) that is neither the background nor a value of another label or region: those voxels cannot be
    both ignored and counted (nnU-Net's dataset check wants it the highest label)."""
    value = dataset.get("labels", {}).get("ignore")
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        raise ValueError(f"dataset.json's ignore label is {value!r}: one integer, not a region (nnU-Net)")
    ignore = label_value("ignore", value)
    if label_values is None:
        label_values = {v for values in labels_from_dataset_json(dataset).values() for v in values}
    if ignore == 0 or ignore in label_values:
        raise ValueError(
            f"dataset.json's ignore label {ignore} is also "
            + ("the background" if ignore == 0 else "the value of a label or region")
            + ": its voxels would be left out of every count; give the ignore label a value of its own (nnU-Net: the "
            "highest label)"
        )
    return ignore


def allowed_label_values(dataset: dict) -> set[int]:
    """The values a label map of this dataset.json may hold: the background, every label and region value,
    and nnU-Net's ignore label (what :func:`nnunet_lesionloss.evaluation.io.check_label_values` is given)."""
    allowed = {0} | {v for values in labels_from_dataset_json(dataset).values() for v in values}
    ignore = ignore_label(dataset)
    if ignore is not None:
        allowed.add(ignore)
    return allowed


def label_key(values: tuple[int, ...]) -> str:
    """nnU-Net's summary key: '1' for a label, '(1, 2)' for a region."""
    return str(values[0]) if len(values) == 1 else str(tuple(values))
