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
    """The ``probabilities`` array of one of nnU-Net's ``.npz`` files; CaseError naming the file otherwise."""
    try:
        with np.load(path) as data:
            if "probabilities" not in data:
                raise CaseError(f"{path} has no 'probabilities' array (keys: {list(data.keys())})")
            return data["probabilities"]
    except (OSError, ValueError) as error:
        raise CaseError(f"cannot read {path}: {error}") from None


def foreground_probability(probabilities: np.ndarray, channel: int | None) -> np.ndarray:
    """Foreground probability from nnU-Net's (C, ...) softmax: 1 - background, or one channel."""
    if probabilities.ndim < 3:
        raise CaseError(f"probabilities of shape {probabilities.shape}: expected (channels, *spatial)")
    if channel is None:
        return 1.0 - probabilities[0]
    if not 0 <= channel < probabilities.shape[0]:
        raise CaseError(f"channel {channel} out of range for {probabilities.shape[0]} channels")
    return probabilities[channel]


def _label_values(value) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)


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
        entries = {name: _label_values(value) for name, value in labels.items() if name != "ignore"}
        if any(len(values) > 1 for values in entries.values()):  # nnU-Net: a list of several labels = regions
            regions = tuple(values for values in entries.values() if set(values) != {0})
            return cls(labels=None, regions=regions, source=source)
        return cls(
            labels=tuple(sorted({v for values in entries.values() for v in values})), regions=None, source=source
        )

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
        """CaseError when the array is not (channels, *spatial) with this model's number of channels."""
        where = f" in {path}" if path else ""
        if probabilities.ndim < 3:
            raise CaseError(f"probabilities of shape {probabilities.shape}{where}: expected (channels, *spatial)")
        if probabilities.shape[0] != self.n_channels:
            raise CaseError(
                f"probabilities{where} have {probabilities.shape[0]} channels, but {self.source} describes "
                f"{self.describe()} ({self.n_channels} channels)"
            )

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


def read_properties(npz_path: Path) -> dict | None:
    """The properties nnU-Net pickled beside the ``.npz`` (``<case>.pkl``), or None when absent or unreadable."""
    path = Path(npz_path).with_suffix(".pkl")
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as handle:
            properties = pickle.load(handle)  # nnU-Net's own file; it loads it the same way
    except Exception:
        return None
    return properties if isinstance(properties, dict) else None


def check_geometry(
    probabilities: np.ndarray, reference: io.LabelImage, npz_path: Path, properties: dict | None = None
) -> np.ndarray:
    """The probabilities with the reference's array shape, or CaseError saying what does not match.

    Checked: the spatial shape (a 2D reference of shape (y, x) accepts nnU-Net's (C, 1, y, x)); and,
    when nnU-Net's ``.pkl`` is there, the spacing (array order) and the SimpleITK origin and direction
    it recorded for the image the probabilities were exported to.
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
            f"probabilities {npz_path.name} have the spatial shape {spatial}, the reference "
            f"{Path(reference.path).name} {shape}{hint}"
        )
    if properties is None:
        return probabilities
    spacing = properties.get("spacing")
    if spacing is not None and len(spacing) == len(shape) + 1:
        spacing = spacing[1:]
    if spacing is not None and not np.allclose(spacing, reference.spacing, rtol=1e-3, atol=1e-3):
        raise CaseError(
            f"probabilities {npz_path.name} were exported at the spacing {tuple(float(s) for s in spacing)} "
            f"(nnU-Net's {npz_path.with_suffix('.pkl').name}), the reference has {reference.spacing}"
        )
    sitk_stuff = properties.get("sitk_stuff") or {}
    if "direction" in sitk_stuff and len(sitk_stuff["direction"]) == len(reference.direction):
        if not np.allclose(sitk_stuff["direction"], reference.direction, atol=1e-3):
            reoriented = " (nnU-Net's reader reoriented the image)" if "original_orientation" in sitk_stuff else ""
            raise CaseError(
                f"probabilities {npz_path.name} are in the orientation {tuple(sitk_stuff['direction'])}{reoriented}, "
                f"the reference in {reference.direction}"
            )
    if "origin" in sitk_stuff and len(sitk_stuff["origin"]) == len(reference.origin):
        if not np.allclose(sitk_stuff["origin"], reference.origin, atol=max(1e-3, 1e-2 * min(reference.spacing))):
            raise CaseError(
                f"probabilities {npz_path.name} have the origin {tuple(sitk_stuff['origin'])}, the reference "
                f"{reference.origin}"
            )
    nibabel_stuff = properties.get("nibabel_stuff") or {}
    if "reoriented_affine" in nibabel_stuff and not np.allclose(
        nibabel_stuff["reoriented_affine"], nibabel_stuff.get("original_affine", np.nan)
    ):
        raise CaseError(
            f"probabilities {npz_path.name} are in the frame nnU-Net's NibabelIOWithReorient reoriented the image "
            "to, not in the reference's"
        )
    return probabilities


def read_case_probabilities(npz_path: Path, reference: io.LabelImage, channels: ProbabilityChannels) -> np.ndarray:
    """One case's probabilities, checked against the model's channels and the reference's geometry."""
    npz_path = Path(npz_path)
    probabilities = load_probabilities(npz_path)
    channels.check(probabilities, npz_path)
    if not np.issubdtype(probabilities.dtype, np.floating):
        raise CaseError(f"probabilities in {npz_path} are of type {probabilities.dtype}, not floating point")
    return check_geometry(probabilities, reference, npz_path, read_properties(npz_path))
