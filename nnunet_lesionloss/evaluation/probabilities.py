"""nnU-Net's saved probabilities (``.npz``): reading them, checking their geometry, one map per label or region.

What nnU-Net 2.8 writes (``nnUNetv2_predict --save_probabilities``, and ``nnUNetv2_train --npz`` for the
final validation into ``fold_X/validation``): beside each ``<case><file_ending>`` segmentation, a
``<case>.npz`` with one array ``probabilities`` of shape (C, *image shape) and a ``<case>.pkl`` with the
image properties (``export_prediction_from_logits``). The probabilities are resampled back to the
original spacing and put back into the uncropped image (``revert_cropping_on_probabilities``: outside
nnU-Net's crop the background channel is 1 for softmax models, every region 0 for region models), and
their axes are in the order of nnU-Net's image reader, which for SimpleITK and NiBabel is SimpleITK's
(z, y, x): the same array order in which :func:`nnunet_lesionloss.evaluation.io.read_label_image`
reads the reference. A 2D image is (C, 1, y, x). Readers that reorient (``SimpleITKIOWithReorient``,
``NibabelIOWithReorient``) leave the probabilities in the reoriented frame; :func:`check_geometry`
refuses them unless the reoriented geometry equals the reference's.

Channels (``LabelManager``): a label-based model writes the softmax over every label of ``dataset.json``
in increasing label value, background first (channel k = the k-th label); a region-based model
(``labels`` holds lists) writes one sigmoid per foreground region in the order of ``dataset.json``,
no background channel. :class:`ProbabilityChannels` maps a label or region of the evaluation
(``summary.json``'s keys) to its probability map.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_lesionloss.evaluation import io
from nnunet_lesionloss.evaluation.io import CaseError


def list_probability_files(folder: Path) -> dict[str, Path]:
    """Case -> ``<case>.npz`` of a folder; raises FileNotFoundError when the folder has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    files = {p.name[:-4]: p for p in sorted(folder.glob("*.npz")) if not p.name.startswith(".")}
    if not files:
        raise FileNotFoundError(
            f"no .npz probability files in {folder} (run nnUNetv2_predict with --save_probabilities, "
            "or nnUNetv2_train with --npz)"
        )
    return files


def load_probabilities(path: Path) -> np.ndarray:
    """The ``probabilities`` array of one of nnU-Net's ``.npz`` files; CaseError naming the file otherwise.

    Only a zip archive of plain arrays is read (numpy's ``allow_pickle`` stays off): a file that is not a zip,
    or whose array holds Python objects, is refused as not nnU-Net's, never loaded some other way."""
    if not zipfile.is_zipfile(path):
        raise CaseError(
            f"{path} is not an .npz archive (nnU-Net writes a zip of arrays with --save_probabilities / --npz): refused"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            if "probabilities" not in data:
                raise CaseError(f"{path} has no 'probabilities' array (keys: {list(data.keys())})")
            probabilities = data["probabilities"]
    except CaseError:
        raise
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise CaseError(f"{path} holds Python objects, not an array of probabilities: refused") from None
        raise CaseError(f"cannot read {path}: {error}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise CaseError(f"cannot read {path}: {type(error).__name__}: {error}") from None
    return probabilities


def _label_values(value) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)


def declares_regions(labels: dict) -> bool:
    """nnU-Net's rule (``LabelManager``): dataset.json declares regions when a label lists several values."""
    return any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())


def softmax_labels(labels: dict) -> dict[int, str]:
    """Label value -> name of a label-based dataset.json (ignore label left out); the softmax has one channel
    per value, in increasing order."""
    return {_label_values(value)[0]: name for name, value in labels.items() if name != "ignore"}


def foreground_regions(labels: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(name, label values) of each region of a region-based dataset.json, in the order of its sigmoid
    channels (dataset.json's order; the background and the ignore label left out)."""
    return [
        (name, _label_values(value))
        for name, value in labels.items()
        if name != "ignore" and set(_label_values(value)) != {0}
    ]


@dataclass(frozen=True)
class ProbabilityChannels:
    """Which channel of nnU-Net's probabilities holds which label (softmax) or region (sigmoid).

    ``labels``: for a label-based model, the label value of each softmax channel (background first);
    ``regions``: for a region-based model, the label values of each sigmoid channel; the other is None.
    """

    labels: tuple[int, ...] | None
    regions: tuple[tuple[int, ...], ...] | None
    source: str = "dataset.json"

    @classmethod
    def from_dataset_json(cls, dataset: dict, source: str = "dataset.json") -> ProbabilityChannels:
        """As nnU-Net's ``LabelManager`` builds them from ``dataset.json``'s ``labels``."""
        labels = dataset.get("labels")
        if not isinstance(labels, dict):
            raise ValueError(f"{source} has no 'labels' dictionary")
        if declares_regions(labels):
            return cls(labels=None, regions=tuple(values for _, values in foreground_regions(labels)), source=source)
        return cls(labels=tuple(sorted(softmax_labels(labels))), regions=None, source=source)

    @property
    def has_regions(self) -> bool:
        return self.regions is not None

    @property
    def n_channels(self) -> int:
        return len(self.regions) if self.regions is not None else len(self.labels)

    def describe(self) -> str:
        if self.regions is not None:
            return f"{self.n_channels} sigmoid regions " + ", ".join(str(list(r)) for r in self.regions)
        return f"softmax over the labels {list(self.labels)}"

    def check(self, probabilities: np.ndarray, path: str | Path = "") -> None:
        """CaseError when the array is not (channels, *spatial) with this model's number of channels, or its
        values are not this model's probabilities (:func:`check_probability_values`)."""
        where = f" in {path}" if path else ""
        if probabilities.ndim < 3:
            raise CaseError(f"probabilities of shape {probabilities.shape}{where}: expected (channels, *spatial)")
        if probabilities.shape[0] != self.n_channels:
            raise CaseError(
                f"probabilities{where} have {probabilities.shape[0]} channels, but {self.source} describes "
                f"{self.describe()} ({self.n_channels} channels)"
            )
        check_probability_values(probabilities, softmax=not self.has_regions, where=where)

    def probability(self, probabilities: np.ndarray, values: Sequence[int]) -> np.ndarray:
        """Probability map of a label (or of the union of several labels) or of a region.

        Softmax: the sum of the channels of ``values`` (the classes are exclusive, so this is the
        probability of their union). Regions: the channel of the region made of exactly ``values``; a
        union of labels that is no region of the model cannot be formed from independent sigmoids.
        """
        values = tuple(int(v) for v in values)
        if 0 in values:
            raise ValueError(f"label group {list(values)} contains the background")
        if self.regions is not None:
            for channel, region in enumerate(self.regions):
                if set(region) == set(values):
                    return probabilities[channel]
            raise CaseError(
                f"{list(values)} is none of the model's regions ({self.describe()} in {self.source}); "
                "a region model's probabilities give exactly its regions"
            )
        missing = [v for v in values if v not in self.labels]
        if missing:
            raise CaseError(f"label(s) {missing} have no softmax channel ({self.describe()} in {self.source})")
        channels = [self.labels.index(v) for v in values]
        if len(channels) == 1:
            return probabilities[channels[0]]
        return probabilities[channels].sum(axis=0)

    def check_groups(self, groups: dict[str, Sequence[int]]) -> None:
        """ValueError, before any case is read, when a label or region of ``groups`` has no probability map."""
        dummy = np.zeros((self.n_channels, 1), dtype=np.float32)
        for key, values in groups.items():
            try:
                self.probability(dummy, values)
            except CaseError as error:
                raise ValueError(f"{key}: {error}") from None

    def any_foreground(self, probabilities: np.ndarray) -> np.ndarray:
        """Probability of any foreground: 1 - background (softmax), or the region that holds every label."""
        if self.regions is None:
            return 1.0 - probabilities[self.labels.index(0)]
        everything = set().union(*map(set, self.regions)) - {0}
        for channel, region in enumerate(self.regions):
            if set(region) - {0} == everything:
                return probabilities[channel]
        raise CaseError(
            f"no region of the model holds every label ({self.describe()} in {self.source}); "
            "name the region (or the probability channel) to use"
        )


#: the only globals a ``<case>.pkl`` may name: the builtins and numpy types nnU-Net's properties hold (numpy's
#: array and scalar reconstructors under numpy 1 and 2 names). Anything else is refused before it is built, so
#: a pickle in a folder under evaluation can never run code (pickle calls what a file names: a ``__reduce__``
#: naming ``os.system`` would run a shell command under a plain ``pickle.load``).
ALLOWED_PICKLE_GLOBALS = frozenset(
    {
        ("builtins", name)
        for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes", "bool")
    }
    | {("collections", "OrderedDict"), ("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype")}
    | {(f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")}
    | {(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")}  # arrays under pickle protocol 5
)


class RefusedPickle(pickle.UnpicklingError):
    """A pickle that names a global nnU-Net's properties never hold."""


class _PropertiesUnpickler(pickle.Unpickler):
    """Unpickles nnU-Net's image properties and nothing else (:data:`ALLOWED_PICKLE_GLOBALS`)."""

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise RefusedPickle(f"{module}.{name} is not a type nnU-Net's properties hold")


def read_properties(npz_path: Path) -> dict | None:
    """The properties nnU-Net pickled beside the ``.npz`` (``<case>.pkl``), or None when absent; read by
    :func:`load_properties`."""
    path = Path(npz_path).with_suffix(".pkl")
    if not path.is_file():
        return None
    return load_properties(path)


def load_properties(path: str | Path) -> dict:
    """nnU-Net's image properties from a ``.pkl`` (beside its ``.npz`` probabilities, or in its preprocessed
    folder), read by a restricted unpickler (:data:`ALLOWED_PICKLE_GLOBALS`): a file that names any other type
    or function is refused with a CaseError, and nothing it names is called. A file that is not a pickle, or not
    a dictionary, is a CaseError too (it cannot vouch for the geometry)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            properties = _PropertiesUnpickler(handle).load()
    except RefusedPickle as error:
        raise CaseError(
            f"{path.name} was refused, not loaded: {error} (only nnU-Net's image properties are read)"
        ) from None
    except Exception as error:  # truncated or not a pickle at all
        raise CaseError(
            f"{path.name} cannot be read as nnU-Net's image properties ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(properties, dict):
        raise CaseError(f"{path.name} holds a {type(properties).__name__}, not nnU-Net's image properties (a dict)")
    return properties


def check_geometry(
    probabilities: np.ndarray,
    reference: io.LabelImage,
    npz_path: Path,
    properties: dict | None = None,
    what: str = "the reference",
) -> np.ndarray:
    """The probabilities with the shape of ``reference`` (the reference they are compared with, or the template
    whose geometry a written label map gets: ``what`` names it in the messages), or CaseError saying what does
    not match.

    Checked: the spatial shape (a 2D image of shape (y, x) accepts nnU-Net's (C, 1, y, x)); and, when nnU-Net's
    ``.pkl`` is there, the spacing (array order) and the SimpleITK origin and direction it recorded for the image
    the probabilities were exported to.
    """
    shape = tuple(reference.array.shape)
    spatial = tuple(probabilities.shape[1:])
    if len(spatial) == len(shape) + 1 and spatial[0] == 1:
        probabilities = probabilities[:, 0]
        spatial = spatial[1:]
    if spatial != shape:
        hint = ""
        if spatial == shape[::-1]:
            hint = " (the axes are reversed: written by a reader with another axis order than SimpleITK's)"
        elif properties is not None and tuple(properties.get("shape_after_cropping_and_before_resampling", ())) == (
            spatial
        ):
            hint = " (the shape of nnU-Net's cropped image: not exported back to the original geometry)"
        raise CaseError(
            f"probabilities {npz_path.name} have the spatial shape {spatial}, {what} "
            f"{Path(reference.path).name} {shape}{hint}"
        )
    if properties is None:
        return probabilities
    recorded = f"nnU-Net's {npz_path.with_suffix('.pkl').name}"
    other = f"{what} {Path(reference.path).name}"
    spacing = properties.get("spacing")
    if spacing is not None and len(spacing) == len(shape) + 1:
        spacing = spacing[1:]
    if spacing is not None and not np.allclose(spacing, reference.spacing, rtol=1e-3, atol=1e-3):
        raise CaseError(
            f"probabilities {npz_path.name} were exported at the spacing {tuple(float(s) for s in spacing)} "
            f"({recorded}), {other} has {reference.spacing}"
        )
    sitk_stuff = properties.get("sitk_stuff") or {}
    if "direction" in sitk_stuff and len(sitk_stuff["direction"]) == len(reference.direction):
        if not np.allclose(sitk_stuff["direction"], reference.direction, atol=1e-3):
            reoriented = " (nnU-Net's reader reoriented the image)" if "original_orientation" in sitk_stuff else ""
            raise CaseError(
                f"probabilities {npz_path.name} are in the orientation {tuple(sitk_stuff['direction'])}{reoriented} "
                f"({recorded}), {other} in {reference.direction}"
            )
    if "origin" in sitk_stuff and len(sitk_stuff["origin"]) == len(reference.origin):
        if not np.allclose(sitk_stuff["origin"], reference.origin, atol=max(1e-3, 1e-2 * min(reference.spacing))):
            raise CaseError(
                f"probabilities {npz_path.name} have the origin {tuple(sitk_stuff['origin'])} ({recorded}), "
                f"{other} {reference.origin}"
            )
    nibabel_stuff = properties.get("nibabel_stuff") or {}
    if "reoriented_affine" in nibabel_stuff and not np.allclose(
        nibabel_stuff["reoriented_affine"], nibabel_stuff.get("original_affine", np.nan)
    ):
        raise CaseError(
            f"probabilities {npz_path.name} are in the frame nnU-Net's NibabelIOWithReorient reoriented the image "
            f"to ({recorded}), not in the frame of {other}"
        )
    return probabilities


def read_case_probabilities(npz_path: Path, reference: io.LabelImage, channels: ProbabilityChannels) -> np.ndarray:
    """One case's probabilities, checked against the model's channels and the reference's geometry."""
    npz_path = Path(npz_path)
    probabilities = load_probabilities(npz_path)
    channels.check(probabilities, npz_path)
    return check_geometry(probabilities, reference, npz_path, read_properties(npz_path))


# --------------------------------------------------------------------------- thresholded targets
@dataclass(frozen=True)
class ProbabilityTarget:
    """One foreground whose probability is thresholded: a label (softmax) or a region (sigmoid), or, for a
    softmax, any foreground label (1 - background).

    nnU-Net's channels (``LabelManager``): a label-based model writes the softmax over all labels of
    dataset.json, in increasing label order (channel k = the k-th smallest label, 0 = background); a
    region-based model (a label of dataset.json that lists several values) writes one sigmoid per
    foreground region, in the order of dataset.json, and segments by writing ``regions_class_order[i]``
    where channel i exceeds 0.5, region after region.
    """

    key: str  # the evaluation's summary key ("1", "(1, 2)"), or "foreground" for any foreground label
    name: str
    channel: int | None  # None: 1 - channel 0 (softmax background)
    kind: str  # "softmax", "sigmoid", or "unknown" (a --channel without dataset.json)
    reference_values: tuple[int, ...] | None  # reference labels of this foreground; None: every label > 0
    output_label: int | None  # label written where it is predicted; None: the most probable foreground label
    channel_labels: tuple[int, ...] | None = None  # softmax: the label of each channel (when known)
    n_channels: int | None = None  # channels the model writes (None: no dataset.json to tell)

    def describe(self) -> str:
        if self.channel is None:
            return "softmax: 1 - channel 0 (background), any foreground label"
        what = {"softmax": "label", "sigmoid": "region"}.get(self.kind, "reference")
        return f"{self.kind} channel {self.channel} ({what} {self.name})"


def _parse_label(text: str | int) -> int | tuple[int, ...] | str:
    """An --label value: an integer label, a region given by its labels ('1,2' or '(1, 2)'), or a name."""
    text = str(text).strip()
    try:
        return int(text)
    except ValueError:
        pass
    inner = text.strip("()[] ")
    parts = [part.strip() for part in inner.split(",") if part.strip()]
    if len(parts) > 1 and all(part.lstrip("-").isdigit() for part in parts):
        return tuple(sorted(int(part) for part in parts))
    return text


def probability_targets(
    dataset: dict | None, label: str | int | None = None, channel: int | None = None
) -> list[ProbabilityTarget]:
    """What ``choose-threshold`` / ``apply-threshold`` threshold, from dataset.json (nnU-Net's channel layout,
    see :class:`ProbabilityTarget`), ``--label`` and ``--channel``; a call that does not say which channel is
    meant is refused (ValueError) with the choices.

    - labels (softmax): any foreground (1 - background) by default, or the channel of ``label``;
    - regions (sigmoid): every region, each its own channel, by default, or the region ``label`` names;
    - no dataset.json: the softmax is assumed (checked when read: the channels must sum to 1), channel k =
      label k (nnU-Net requires consecutive labels), unless ``channel`` says otherwise.
    """
    wanted = None if label is None else _parse_label(label)
    if channel is not None and channel < 0:
        raise ValueError(f"--channel must be >= 0, got {channel}")
    if dataset is None:
        if isinstance(wanted, (str, tuple)):
            raise ValueError(
                f"--label {label}: without a dataset.json only integer labels can be named (pass --dataset-json)"
            )
        if wanted == 0:
            raise ValueError("--label 0 is the background")
        if channel is not None:
            values = None if wanted is None else (wanted,)
            key = io.label_key(values) if values else "foreground"
            return [ProbabilityTarget(key, key, channel, "unknown", values, wanted or 1)]
        if wanted is None:
            return [ProbabilityTarget("foreground", "foreground", None, "softmax", None, None)]
        return [ProbabilityTarget(str(wanted), str(wanted), wanted, "softmax", (wanted,), wanted)]

    labels = dataset.get("labels")
    if not isinstance(labels, dict):
        raise ValueError("dataset.json has no 'labels' dictionary")
    if not declares_regions(labels):
        return [_softmax_target(labels, wanted, channel, label)]
    return _region_targets(labels, dataset.get("regions_class_order"), wanted, channel, label)


def _softmax_target(labels: dict, wanted, channel: int | None, label_text) -> ProbabilityTarget:
    values = softmax_labels(labels)
    channel_labels = tuple(sorted(values))
    n_channels = len(channel_labels)
    described = ", ".join(f"{values[v]} {v}" for v in channel_labels)
    if channel is not None:
        if channel >= n_channels:
            raise ValueError(
                f"--channel {channel}: dataset.json's labels give {n_channels} softmax channels ({described})"
            )
        if channel_labels[channel] == 0:
            raise ValueError(
                "--channel 0 is the softmax background; give a label's channel, or neither (1 - background)"
            )
    if wanted is None and channel is None:
        return ProbabilityTarget("foreground", "foreground", None, "softmax", None, None, channel_labels, n_channels)
    if wanted is not None:
        matches = [v for v, name in values.items() if wanted in (v, name)]
        if not matches or matches == [0]:
            raise ValueError(
                f"--label {label_text}: dataset.json has no such foreground label (its labels: {described})"
            )
        value = matches[0]
        if channel is not None and channel_labels[channel] != value:
            raise ValueError(
                f"--label {label_text} is softmax channel {channel_labels.index(value)}, not --channel {channel}"
            )
    else:
        value = channel_labels[channel]
    return ProbabilityTarget(
        io.label_key((value,)),
        values[value],
        channel_labels.index(value),
        "softmax",
        (value,),
        value,
        channel_labels,
        n_channels,
    )


def _region_targets(labels: dict, class_order, wanted, channel: int | None, label_text) -> list[ProbabilityTarget]:
    regions = foreground_regions(labels)  # nnU-Net's LabelManager order
    if class_order is not None and len(class_order) != len(regions):
        raise ValueError(
            f"dataset.json's regions_class_order has {len(class_order)} entries for {len(regions)} regions"
        )
    targets = [
        ProbabilityTarget(
            io.label_key(values),
            name,
            index,
            "sigmoid",
            values,
            None if class_order is None else int(class_order[index]),
            None,
            len(regions),
        )
        for index, (name, values) in enumerate(regions)
    ]
    described = "; ".join(f"channel {t.channel}: {t.name} = labels {list(t.reference_values)}" for t in targets)
    if channel is not None and channel >= len(targets):
        raise ValueError(f"--channel {channel}: dataset.json declares {len(targets)} sigmoid regions ({described})")
    if wanted is None:
        return targets if channel is None else [targets[channel]]
    matches = [
        t
        for t in targets
        if wanted == t.name
        or (isinstance(wanted, int) and t.reference_values == (wanted,))
        or (isinstance(wanted, tuple) and tuple(sorted(t.reference_values)) == wanted)
    ]
    if not matches:
        raise ValueError(
            f"--label {label_text} names no region of dataset.json, which declares sigmoid regions ({described}); "
            "give a region's name or its labels (e.g. --label 1,2) or --channel"
        )
    if channel is not None and matches[0].channel != channel:
        raise ValueError(f"--label {label_text} is region channel {matches[0].channel}, not --channel {channel}")
    return matches[:1]


#: largest deviation from 1 of the channel sum that still counts as a softmax (float32 rounding)
SOFTMAX_TOLERANCE = 1e-3


def foreground_probability(probabilities: np.ndarray, target: ProbabilityTarget) -> np.ndarray:
    """The probability of ``target`` from nnU-Net's (C, ...) probabilities (see :func:`probability_targets`);
    raises CaseError when the array does not fit the model dataset.json describes."""
    if probabilities.ndim < 3:
        raise CaseError(f"probabilities of shape {probabilities.shape}: expected (channels, *spatial)")
    n_channels = probabilities.shape[0]
    if target.n_channels is not None and n_channels != target.n_channels:
        kind = "sigmoid regions" if target.kind == "sigmoid" else "softmax labels"
        raise CaseError(f"{n_channels} probability channels, but dataset.json declares {target.n_channels} {kind}")
    if target.channel is not None and target.channel >= n_channels:
        raise CaseError(f"channel {target.channel} out of range for {n_channels} channels")
    # declared by dataset.json, or assumed without one: a softmax must sum to 1
    check_probability_values(probabilities, softmax=target.kind == "softmax")
    return 1.0 - probabilities[0] if target.channel is None else probabilities[target.channel]


#: how far a probability may lie outside [0, 1] (float32 rounding of nnU-Net's export)
RANGE_TOLERANCE = 1e-6


def check_probability_values(probabilities: np.ndarray, softmax: bool, where: str = "") -> None:
    """CaseError unless every value is a finite probability in [0, 1] and, for a softmax model, the channels of
    every voxel sum to 1 (within :data:`SOFTMAX_TOLERANCE`): the one check of the values of nnU-Net's ``.npz``
    (the FROC analysis and choose-threshold alike). Logits, NaN in any channel (the background's too) and -inf
    are refused, naming what was found."""
    if not np.issubdtype(probabilities.dtype, np.floating):
        raise CaseError(f"probabilities{where} are of type {probabilities.dtype}, not floating point")
    finite = np.isfinite(probabilities)
    if not finite.all():
        channels = np.nonzero((~finite).reshape(finite.shape[0], -1).any(axis=1))[0].tolist()
        raise CaseError(
            f"probabilities{where} hold NaN or infinite values ({int((~finite).sum())} values, channel(s) "
            f"{channels}): not nnU-Net's probabilities"
        )
    low, high = float(probabilities.min()), float(probabilities.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise CaseError(
            f"probabilities{where} outside [0, 1] (from {low:g} to {high:g}): logits instead of probabilities? "
            "(nnUNetv2_predict --save_probabilities writes probabilities)"
        )
    if softmax:
        deviation = float(np.abs(probabilities.sum(axis=0, dtype=np.float64) - 1.0).max())
        if deviation > SOFTMAX_TOLERANCE:
            raise CaseError(
                f"the {probabilities.shape[0]} probability channels{where} do not sum to 1 (by up to {deviation:.3g}) "
                "as a softmax does: sigmoid (region) probabilities? Pass the model's dataset.json (--dataset-json) "
                "or --channel"
            )
