"""Reading label images (SimpleITK), pairing prediction and reference files, writing outputs safely.

Arrays are returned in SimpleITK's (z, y, x) order together with the spacing *in the same order*
(``GetSpacing()[::-1]``): panoptica 2.1.7 pairs a SimpleITK array with ``GetSpacing()`` (x, y, z),
which puts distances on the wrong axes, so we never hand it SimpleITK images.

Outputs: every command first checks that its output folder can be created and written
(:func:`prepare_output_dir`), then writes each file to a hidden temporary file in the same folder
and renames it (:func:`atomic_write`), so an interrupted run never leaves a half-written file under a
result's name. Hidden files (``.name``) are never read as images.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# where an output may go (never where its command reads): its own module, named here too as the other writers are
from nnunet_lesionloss.evaluation.output_places import check_output_apart, check_output_file_apart  # noqa: F401

# the file endings nnU-Net's SimpleITK / NIfTI readers accept, longest first
SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".gipl", ".tif", ".tiff", ".png", ".bmp")


class CaseError(Exception):
    """A problem with one case (missing file, mismatch, bad labels); the other cases go on."""


class OutputError(OSError):
    """The output folder cannot be created or written; raised before any work is done."""


@dataclass
class LabelImage:
    array: np.ndarray
    spacing: tuple[float, ...]  # array-axis order, mm
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    path: str


def read_label_image(path: str | os.PathLike) -> LabelImage:
    """Read a label image; raises CaseError naming the path when it cannot be read, or could only be
    read wrongly (a broken link, a truncated NIfTI file, a NIfTI file SimpleITK would swap for another)."""
    import SimpleITK as sitk

    path = str(path)
    if os.path.islink(path) and not os.path.exists(path):
        raise CaseError(f"{path} is a broken symbolic link: its target {os.readlink(path)} does not exist")
    if not os.path.isfile(path):
        raise CaseError(f"file not found: {path}")
    nifti = path.lower().endswith((".nii", ".nii.gz"))
    if nifti:
        _check_nifti_file(path)
    try:
        image = sitk.ReadImage(path)
    except Exception as error:  # SimpleITK raises RuntimeError with a long message
        raise CaseError(
            f"cannot read {path}: {str(error).strip().splitlines()[-1] if str(error).strip() else error}"
        ) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"{path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; a label map has one")
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and nifti:
        _check_nifti_values(path)
    return LabelImage(
        array=array,
        spacing=tuple(float(s) for s in image.GetSpacing()[::-1]),
        origin=tuple(image.GetOrigin()),
        direction=tuple(image.GetDirection()),
        path=path,
    )


def _check_nifti_file(path: str) -> None:
    """Refuse the NIfTI files that SimpleITK 2.5 (ITK 5.4) reads wrongly without an error.

    - ``c1.nii`` beside ``c1.nii.gz``: ITK's NIfTI reader, asked for ``c1.nii.gz``, opens ``c1.nii``;
    - a truncated file (plain or gzip): ITK reads it and fills the missing voxels. The header (read
      with nibabel) says how many bytes of voxels follow; a plain file must hold them, a gzip stream
      must end with them (its trailer records the uncompressed size; a file whose trailer disagrees,
      e.g. a multi-member gzip, is decompressed to be sure).
    """
    if path.lower().endswith(".nii.gz") and os.path.isfile(path[: -len(".gz")]):
        raise CaseError(
            f"{os.path.basename(path[: -len('.gz')])} lies beside {path}: SimpleITK (ITK's NIfTI reader) reads "
            f"{os.path.basename(path[: -len('.gz')])} when asked for {os.path.basename(path)}; move or remove one of them"
        )
    header = _nifti_header(path)
    if header is None:
        return
    offset, data_bytes = header
    expected = offset + data_bytes
    if path.lower().endswith(".gz"):
        stored = _gzip_uncompressed_size(path, expected)
    else:
        stored = os.path.getsize(path)
    if stored is None or stored < expected:
        raise CaseError(
            f"{path} is truncated or corrupt: its header announces {data_bytes} bytes of voxels after offset {offset}, "
            + ("the gzip stream ends early" if stored is None else f"the file holds {stored} bytes in all")
            + " (SimpleITK would read it and fill the missing voxels)"
        )


def _nifti_header(path: str) -> tuple[int, int] | None:
    """(voxel offset, bytes of voxel data) from a NIfTI header, or None when nibabel cannot tell."""
    try:
        import nibabel
    except ImportError:  # nibabel comes with nnU-Net; without it the checks cannot be made
        return None
    try:
        image = nibabel.load(path)
        offset = int(image.dataobj.offset)
        data_bytes = int(np.prod(image.shape, dtype=np.int64)) * image.get_data_dtype().itemsize
    except Exception:  # a header nibabel cannot parse: SimpleITK has the last word on it
        return None
    return offset, data_bytes


def _gzip_uncompressed_size(path: str, expected: int) -> int | None:
    """The uncompressed size of a gzip file, or None when its stream is cut or corrupt. The trailer's
    size (modulo 2³²) is trusted when it equals ``expected``; otherwise the stream is decompressed."""
    import gzip
    import zlib

    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() >= 18:  # the smallest gzip member: 10-byte header, 8-byte trailer
            handle.seek(-4, os.SEEK_END)
            if int.from_bytes(handle.read(4), "little") == expected % 2**32:
                return expected
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 24):
                total += len(chunk)
    except (EOFError, OSError, zlib.error):
        return None
    return total


def _check_nifti_values(path: str) -> None:
    """SimpleITK 2.5 (ITK 5.4) reads NaN and ±inf in a float NIfTI file as 0, so a label map with them
    would be evaluated as background without a word: read the stored values with nibabel and refuse them."""
    try:
        import nibabel
    except ImportError:  # nibabel comes with nnU-Net; without it the check cannot be made
        return
    try:
        stored = np.asanyarray(nibabel.load(path).dataobj)
    except Exception as error:  # _check_nifti_file found the voxels complete: nibabel fails on something else
        raise CaseError(f"cannot read the stored values of {path} to check them for NaN and inf: {error}") from None
    if not np.issubdtype(stored.dtype, np.floating):
        return
    for name, count in (
        ("NaN", int(np.count_nonzero(np.isnan(stored)))),
        ("infinite values", int(np.count_nonzero(np.isinf(stored)))),
    ):
        if count:
            raise CaseError(
                f"{path} contains {name} in {count} voxels (SimpleITK would read them as 0); "
                "a label map holds integer labels"
            )


def as_integer_labels(image: LabelImage) -> np.ndarray:
    """The label array as integers; raises CaseError for NaN, infinite or non-integer values (e.g. probabilities)."""
    array = image.array
    if np.issubdtype(array.dtype, np.integer):
        return array  # keep the stored width: a 512x512x176 int64 copy alone costs 370 MB
    if array.dtype == bool:
        return array.astype(np.uint8)
    nan = int(np.count_nonzero(np.isnan(array)))
    if nan:
        raise CaseError(f"{image.path} contains NaN in {nan} voxels; a label map holds integer labels")
    infinite = int(np.count_nonzero(np.isinf(array)))
    if infinite:
        raise CaseError(f"{image.path} contains infinite values in {infinite} voxels; a label map holds integer labels")
    fractional = array != np.round(array)
    if fractional.any():
        example = float(array[fractional].flat[0])
        raise CaseError(
            f"{image.path} contains non-integer values (e.g. {example:g} in {int(fractional.sum())} voxels); "
            "expected a label map, not probabilities"
        )
    if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
        raise CaseError(f"{image.path} holds labels beyond the 32-bit integer range")
    return array.astype(np.int32)


def check_label_values(values, allowed: set[int] | None, what: str) -> None:
    """The one rule for label values in a reference or prediction: negative values, and (when ``allowed`` is
    known, from dataset.json or a preset) values it does not list, make the case fail with a CaseError naming
    them; they are never dropped, counted as misses or skipped in silence. ``values``: the values present."""
    values = {int(v) for v in values}
    negative = sorted(v for v in values if v < 0)
    if negative:
        raise CaseError(f"negative label values {negative} in the {what}: a label map holds labels >= 0")
    if allowed is not None:
        unexpected = sorted(values - set(allowed))
        if unexpected:
            raise CaseError(
                f"unexpected label values {unexpected} in the {what}: no label of dataset.json or the preset has them "
                f"(allowed: {sorted(allowed)})"
            )


def present_values(labels: np.ndarray) -> np.ndarray:
    """The distinct values of an integer label array, sorted (counted per value when they are non-negative and
    few: a 512×512×176 map in a fraction of the time of a sort)."""
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    if int(labels.min()) >= 0 and int(labels.max()) < 1 << 20:
        return np.flatnonzero(np.bincount(labels.ravel()))
    return np.unique(labels)


def allowed_label_values(dataset: dict) -> set[int]:
    """The values a label map of this dataset.json may hold: the background, every label and region value,
    and nnU-Net's ignore label (what :func:`check_label_values` is given)."""
    allowed = {0} | {v for values in labels_from_dataset_json(dataset).values() for v in values}
    ignore = dataset["labels"].get("ignore")
    if ignore is not None:
        allowed.add(int(ignore))
    return allowed


def check_same_geometry(reference: LabelImage, prediction: LabelImage, tolerance: float = 1e-3) -> None:
    """Raise CaseError when shape, spacing, origin or orientation differ."""
    if reference.array.shape != prediction.array.shape:
        raise CaseError(
            f"shape mismatch: reference {reference.array.shape} vs prediction {prediction.array.shape} "
            f"({prediction.path})"
        )
    if not np.allclose(reference.spacing, prediction.spacing, rtol=tolerance, atol=tolerance):
        raise CaseError(
            f"spacing mismatch: reference {reference.spacing} vs prediction {prediction.spacing} ({prediction.path})"
        )
    if not np.allclose(reference.direction, prediction.direction, atol=tolerance):
        raise CaseError(
            f"orientation mismatch: reference direction {reference.direction} vs prediction "
            f"{prediction.direction} ({prediction.path})"
        )
    if not np.allclose(reference.origin, prediction.origin, atol=max(tolerance, 1e-2 * min(reference.spacing))):
        raise CaseError(
            f"origin mismatch: reference {reference.origin} vs prediction {prediction.origin} ({prediction.path})"
        )


def strip_ending(name: str, endings: Iterable[str] = SUPPORTED_ENDINGS) -> str | None:
    for ending in endings:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return None


def _visible_files(folder: Path) -> list[Path]:
    # hidden files are skipped: our own temporary outputs (.partial-*) and system files; a broken
    # symbolic link is listed, so that reading it fails with its reason instead of the case vanishing
    return [
        p
        for p in sorted(folder.iterdir())
        if not p.name.startswith(".") and (p.is_file() or (p.is_symlink() and not p.exists()))
    ]


class ImageFiles(dict):
    """Case identifier -> image path, as :func:`list_images` finds them. A case identifier that several
    files share (``c1.nii.gz`` and ``c1.mha`` when no file ending is given) is not in the mapping: it is
    in ``ambiguous`` (case -> its files), which the caller reports as a failure of that case."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ambiguous: dict[str, list[Path]] = {}


def ambiguity_reason(case: str, paths: Sequence[Path], what: str) -> str:
    """Why a case with several files is not evaluated."""
    return (
        f"{len(paths)} {what} files for case {case}: {', '.join(p.name for p in paths)} in {paths[0].parent}; "
        "pass --file-ending (or a dataset.json with file_ending) to choose one"
    )


def list_images(folder: str | os.PathLike, file_ending: str | None = None) -> ImageFiles:
    """Case identifier -> path of every label image in ``folder`` (not recursive, hidden files skipped,
    broken symbolic links listed); cases with several files are in ``.ambiguous`` (:class:`ImageFiles`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    endings = (file_ending,) if file_ending else SUPPORTED_ENDINGS
    found: dict[str, list[Path]] = {}
    for path in _visible_files(folder):
        case = strip_ending(path.name, endings)
        if case is not None:
            found.setdefault(case, []).append(path)
    cases = ImageFiles({case: paths[0] for case, paths in found.items() if len(paths) == 1})
    cases.ambiguous = {case: paths for case, paths in found.items() if len(paths) > 1}
    return cases


def list_references(folder: str | os.PathLike, file_ending: str | None, ending_source: str) -> dict[str, Path]:
    """:func:`list_images` of a reference folder; FileNotFoundError when it has none, naming the endings it
    does hold when they differ from ``file_ending`` (which ``ending_source``, e.g. dataset.json, gave)."""
    references = list_images(folder, file_ending)
    if not references:
        raise FileNotFoundError(
            f"no reference images in {folder}"
            + (f" ending in {file_ending}" if file_ending else "")
            + ending_mismatch_hint(folder, file_ending, ending_source)
        )
    return references


def endings_found(folder: str | os.PathLike) -> dict[str, int]:
    """Image file ending -> number of files in ``folder`` (to explain a file-ending mismatch)."""
    counts: dict[str, int] = {}
    folder = Path(folder)
    if not folder.is_dir():
        return counts
    for path in _visible_files(folder):
        for ending in SUPPORTED_ENDINGS:
            if path.name.lower().endswith(ending):
                counts[ending] = counts.get(ending, 0) + 1
                break
    return counts


def ending_mismatch_hint(folder: str | os.PathLike, file_ending: str | None, source: str) -> str:
    """'' or a sentence saying that the folder holds images with other endings than ``file_ending``."""
    if not file_ending:
        return ""
    others = {e: n for e, n in endings_found(folder).items() if e != file_ending}
    if not others:
        return ""
    found = ", ".join(f"{n} ending in {e}" for e, n in sorted(others.items()))
    return f" ({folder} holds {found}, but {source} says the file ending is {file_ending}: pass --file-ending)"


#: the official BraTS evaluator's subject id (BraTS/BraTS_evaluation, evaluation.py): five digits with an
#: optional -NNN, or four digits and -N to -NNN; the prediction is the file whose name ends in "<id><ending>"
BRATS_SUBJECT_ID = re.compile(r"(\d{5}(?:-\d{3})?|\d{4}-\d{1,3})")


def brats_subject_id(name: str) -> str | None:
    match = BRATS_SUBJECT_ID.search(name)
    return match.group(1) if match else None


def pair_cases(
    reference: dict[str, Path], prediction: dict[str, Path], pairing: str = "name"
) -> list[tuple[str, Path, Path | None]]:
    """(case, reference path, prediction path or None) for every reference case.

    ``name``: identical case identifiers (nnU-Net). ``brats``: as the official BraTS evaluator, the
    subject id in the reference's name (:data:`BRATS_SUBJECT_ID`) and the prediction whose name ends
    in it (BraTS predictions are named differently from the references). A reference without a
    subject id raises ValueError (pairing by name is then the only way); a prediction that several
    names fit is an error of that case.
    """
    if pairing == "name":
        return [(case, path, prediction.get(case)) for case, path in reference.items()]
    if pairing != "brats":
        raise ValueError(f"unknown pairing {pairing!r}")
    without_id = [path.name for path in reference.values() if brats_subject_id(path.name) is None]
    if without_id:
        raise ValueError(
            "--pairing brats (the default of --preset brats-mets) pairs files by the BraTS subject id in their "
            f"names (e.g. BraTS-MET-00132-000-seg.nii.gz with ...00132-000.nii.gz), and {len(without_id)} reference "
            f"file(s) have none: {', '.join(without_id[:3])}. Name the files as BraTS does, or pass --pairing name "
            "to pair references and predictions of identical names"
        )
    pairs = []
    for case, path in reference.items():
        subject = brats_subject_id(path.name)
        ending = path.name[len(case) :]
        fits = sorted(p for p in prediction.values() if p.name.endswith(f"{subject}{ending}"))
        if len(fits) > 1:
            pairs.append((case, path, AmbiguousPrediction(subject, fits)))
        else:
            pairs.append((case, path, fits[0] if fits else None))
    return pairs


@dataclass(frozen=True)
class AmbiguousPrediction:
    """Several prediction files end in the same BraTS subject id (the official evaluator takes an
    arbitrary one of them; we report the case instead)."""

    subject: str
    paths: list[Path]

    def __str__(self) -> str:
        return (
            f"{len(self.paths)} predictions end in {self.subject}: "
            + ", ".join(p.name for p in self.paths[:3])
            + " (pairing by BraTS subject id is ambiguous; rename them or pass --pairing name)"
        )


def file_fingerprint(path: str | os.PathLike) -> list[int] | None:
    """[size in bytes, modification time in ns] of a file, or None if it is gone: enough to notice
    that a prediction was rewritten since it was evaluated."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return [int(status.st_size), int(status.st_mtime_ns)]


def file_checksum(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's bytes (hex), or None if it cannot be read: what tells two reference folders
    with the same files (nnU-Net's labelsTr and gt_segmentations) from folders of other files."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def read_dataset_json(path: str | os.PathLike) -> dict:
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"dataset.json not found: {path}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def labels_from_dataset_json(dataset: dict) -> dict[str, tuple[int, ...]]:
    """Evaluated label or region name -> label values, from nnU-Net's ``labels`` (regions: lists)."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict):
        raise ValueError("dataset.json has no 'labels' dictionary")
    result = {}
    for name, value in labels.items():
        values = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
        if values == (0,) or name == "background":
            continue
        if name == "ignore":
            continue
        result[name] = values
    return result


def label_key(values: tuple[int, ...]) -> str:
    """nnU-Net's summary key: '1' for a label, '(1, 2)' for a region."""
    return str(values[0]) if len(values) == 1 else str(tuple(values))


def json_ready(value):
    """Replace NaN/inf by None and numpy scalars by Python ones, recursively."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def temporary_tag(name: str) -> str:
    """The part of a temporary file's name that stands for the file ``name`` it becomes: a digest of ``name``
    and its ending, short whatever the length of ``name`` (a temporary name made of a long legal name would
    exceed the 255 bytes of a file name), and the same on every run (a later run finds what a killed one left)."""
    ending = next((e for e in SUPPORTED_ENDINGS if name.endswith(e)), Path(name).suffix)
    return hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:16] + ending


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary path)`` and rename the result to ``path``: a reader (or a run killed
    half-way) sees the old file or the new one, never a half-written one. The temporary file is
    hidden (``.partial-<pid>-<tag>``, :func:`temporary_tag`: same folder, same ending, so writers that infer
    the format from the name still work) and removed on failure."""
    path = Path(path)
    temporary = path.with_name(f".partial-{os.getpid()}-{temporary_tag(path.name)}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda temporary: temporary.write_text(text))


#: a text cell starting with one of these is read as a formula by spreadsheet programs (CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text_cell(value):
    """A CSV cell as spreadsheets should read it: text that would start a formula (``=``, ``+``, ``-``, ``@``,
    tab, carriage return: a case name such as ``=HYPERLINK(...)``) gets a leading apostrophe, OWASP's
    mitigation of CSV injection, which spreadsheets show as text; numbers (also written as text, "-13.75") and
    other text are unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    """A number written as text ("-13.75", "+1e-3"): a spreadsheet reads it as that number, never as a formula."""
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text


def write_csv(path: str | os.PathLike, header: list[str], rows: list[list]) -> Path:
    """A CSV with one header row, written atomically (see :func:`atomic_write`); text cells that a spreadsheet
    would run as a formula are escaped (:func:`csv_text_cell`)."""
    import csv

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([csv_text_cell(cell) for cell in header])
            writer.writerows([csv_text_cell(cell) for cell in row] for row in rows)

    return atomic_write(path, write)


def write_json(path: str | os.PathLike, data, overwrite: bool) -> Path:
    """Strict JSON (NaN and infinities as null), written atomically; refuses to replace a file
    without ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_ready(data), indent=2, allow_nan=False)
    return write_text(path, text)


def check_writable(path: str | os.PathLike, overwrite: bool) -> None:
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")


#: the hidden file a command leaves in its output folder before it writes anything there: output-named files
#: beside it and without the command's marker are what an interrupted run of the command left
WRITING_RECORD = ".nnunet-lesionloss-writing"


def prepare_output_dir(
    folder: str | os.PathLike, names: Iterable[str] = (), overwrite: bool = False, marker: str | None = None
) -> Path:
    """Create ``folder`` (with parents) and make sure a file can be written in it, and that none of
    ``names`` exists there unless ``overwrite``; before any work, so a bad output path costs nothing.

    ``marker`` is the file a command writes last (its summary). Output-named files without the marker are what
    an interrupted run left, and may be replaced, only when that run's record (:data:`WRITING_RECORD`, written
    here before any output) is there too; the user's own files that merely have an output's name (a
    ``cases.csv`` of their own, no record) are never replaced without ``overwrite``. Raises
    :class:`OutputError` (folder) or ``FileExistsError`` (a file), naming the path.
    """
    folder = Path(folder)
    names = list(names)
    interrupted = marker is not None and not (folder / marker).exists() and (folder / WRITING_RECORD).is_file()
    for name in names:
        if not interrupted or name == marker:
            check_writable(folder / name, overwrite)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the output folder {folder}: {error.strerror or error}") from None
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputError(f"cannot write into the output folder {folder}: {error.strerror or error}") from None
    for name in names:  # temporary files a killed run left behind (never read: hidden)
        for leftover in folder.glob(f".partial-*-{glob.escape(temporary_tag(name))}"):
            with contextlib.suppress(OSError):
                leftover.unlink()
    if marker is not None:
        write_text(folder / WRITING_RECORD, "\n".join(names) + "\n")
    return folder
