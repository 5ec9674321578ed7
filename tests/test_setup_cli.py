"""env / doctor / synth, and trainer discovery from a regular (non-editable) install."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO
from nnunet_lesionloss.cli import main
from nnunet_lesionloss.components import label_components
from nnunet_lesionloss.installation import doctor_report, export_line, shipped_trainer_names, trainer_folder


def test_env_prints_the_trainer_folder_and_keeps_other_paths(capsys):
    assert main(["env"]) == 0
    assert capsys.readouterr().out.strip().endswith(trainer_folder())
    assert export_line("/other/trainers") == f"export nnUNet_extTrainer=/other/trainers{os.pathsep}{trainer_folder()}"
    assert export_line(trainer_folder()) == f"export nnUNet_extTrainer={trainer_folder()}"


def test_doctor_names_each_problem_and_finds_every_trainer(tmp_path):
    problems = [message for ok, message in doctor_report({}) if not ok]
    assert any(m.startswith("nnUNet_raw is not set") for m in problems)
    assert any("nnUNet_extTrainer does not contain" in m for m in problems)
    environ = {name: str(tmp_path) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    environ["nnUNet_extTrainer"] = trainer_folder()
    report = doctor_report(environ)
    assert all(ok for ok, _ in report), [m for ok, m in report if not ok]
    count = len(shipped_trainer_names())
    assert any(f"nnU-Net finds {count}/{count} shipped trainers" in message for _, message in report)
    missing = dict(environ, nnUNet_raw=str(tmp_path / "nope"))
    assert any("does not exist" in m for ok, m in doctor_report(missing) if not ok)


def test_trainers_are_found_from_a_regular_install(tmp_path):
    """pip install . (not -e): trainers/ and configs/ must be inside the installed package."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    script = (
        "import os, nnunet_lesionloss.installation as s\n"
        "folder = s.trainer_folder(); os.environ['nnUNet_extTrainer'] = folder\n"
        "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()): cls = find('nnUNetTrainerCATMIL')\n"
        "import sys; print(folder); print(sys.modules[cls.__module__].__file__)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    folder, module_file = out.stdout.strip().splitlines()[-2:]
    assert folder == str(target / "nnunet_lesionloss" / "trainers")
    assert module_file.startswith(str(target)), "the class comes from the installed package, not the checkout"
    assert (target / "nnunet_lesionloss" / "configs" / "catmil.yaml").is_file()


def test_synth_writes_a_reproducible_nnunet_raw_dataset(tmp_path):
    for run in ("a", "b"):
        assert (
            main(
                [
                    "synth",
                    "--raw",
                    str(tmp_path / run),
                    "--dataset-id",
                    "7",
                    "--cases",
                    "3",
                    "--shape",
                    "24",
                    "24",
                    "24",
                    "--classes",
                    "2",
                    "--two-channels",
                    "--seed",
                    "5",
                ]
            )
            == 0
        )
    folder = tmp_path / "a" / "Dataset007_SyntheticLesions"
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "lesion_1": 1, "lesion_2": 2}
    assert dataset["channel_names"] == {"0": "FLAIR", "1": "T1"} and dataset["numTraining"] == 3
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "case_000.nii.gz")))
    again = sitk.GetArrayFromImage(
        sitk.ReadImage(str(tmp_path / "b" / "Dataset007_SyntheticLesions" / "labelsTr" / "case_000.nii.gz"))
    )
    assert (first == again).all(), "same seed, same dataset"
    assert set(int(v) for v in sorted(set(first.ravel().tolist()))) <= {0, 1, 2} and first.max() > 0
    sizes = [
        int((label_components(first > 0, 26) == k).sum()) for k in range(1, label_components(first > 0, 26).max() + 1)
    ]
    assert min(sizes) <= 10, "small lesions (a few voxels) are part of the synthetic data"
    assert (folder / "imagesTr" / "case_002_0001.nii.gz").is_file()


def test_synth_contrast_and_noise_set_how_far_lesions_stand_out(tmp_path):
    """The compare demo's harder data: lesion voxels are brighter than the tissue by contrast + 0.3."""
    common = ["synth", "--dataset-id", "8", "--cases", "2", "--shape", "24", "24", "24", "--seed", "1"]
    means = {}
    for contrast, noise in ((1.5, 0.5), (0.7, 0.5), (0.7, 0.0)):
        raw = tmp_path / f"{contrast}_{noise}"
        assert main([*common, "--raw", str(raw), "--contrast", str(contrast), "--noise", str(noise)]) == 0
        folder = raw / "Dataset008_SyntheticLesions"
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "imagesTr" / "case_000_0000.nii.gz")))
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "case_000.nii.gz")))
        tissue = (image > 0.5) & (labels == 0) if noise == 0 else None
        means[(contrast, noise)] = image[labels > 0].mean()
        if tissue is not None:  # without noise: tissue is exactly 1, lesions exactly 1 + 0.7 + 0.3
            assert np.allclose(image[tissue], 1.0) and np.allclose(image[labels > 0], 2.0)
    assert means[(1.5, 0.5)] - means[(0.7, 0.5)] > 0.6


def test_doctor_checks_the_versions_the_package_metadata_declares():
    import tomllib

    from nnunet_lesionloss.installation import declared_requirements

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(str(r) for r in declared_requirements()) == sorted(
        str(__import__("packaging.requirements").requirements.Requirement(d)) for d in declared
    )
    version_lines = [m for _, m in doctor_report({})][: len(declared)]
    assert [line.split()[0] for line in version_lines] == [r.name for r in declared_requirements()]
    assert not any("==" in d for d in declared if d.startswith(("torch", "nnunetv2"))), (
        "no exact pin of torch or nnU-Net"
    )


def test_env_line_survives_eval_with_spaces_and_shell_characters(tmp_path):
    """Observed: a path with a space broke eval "$(nnunet-lesionloss env)"."""
    current = f"{tmp_path}/my trainers{os.pathsep}{tmp_path}/it's $HOME"
    line = export_line(current)
    done = subprocess.run(
        ["bash", "-c", 'eval "$LINE" && printf %s "$nnUNet_extTrainer"'],
        env={"LINE": line, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == f"{current}{os.pathsep}{trainer_folder()}"


def test_doctor_checks_discovery_with_the_environment_as_the_user_has_it(tmp_path):
    """Observed: doctor added the trainer folder itself before looking the trainers up, so it said
    'nnU-Net finds 27/27' while nnUNetv2_train -tr failed in the user's shell."""
    environ = {name: str(tmp_path) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    count = len(shipped_trainer_names())
    report = doctor_report(environ)  # nnUNet_extTrainer not set
    assert not any(
        ok and f"finds {count}/{count}" in message and "your environment" in message for ok, message in report
    )
    assert any(
        not ok and f"with your environment (nnUNet_extTrainer not set) nnU-Net finds 0/{count}" in m for ok, m in report
    )
    assert any(ok and f"nnU-Net would find {count}/{count}" in message for ok, message in report)


def test_doctor_names_a_trainer_that_another_folder_shadows(tmp_path):
    shadow = tmp_path / "old_copy"
    shadow.mkdir()
    (shadow / "old_trainers.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n"
        "class nnUNetTrainerBlob(nnUNetTrainer):\n    pass\n"
    )
    environ = {name: str(tmp_path) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    environ["nnUNet_extTrainer"] = f"{shadow}{os.pathsep}{trainer_folder()}"
    problems = [message for ok, message in doctor_report(environ) if not ok]
    assert any("nnUNetTrainerBlob (nnU-Net would use old_trainers.nnUNetTrainerBlob instead)" in m for m in problems)


@pytest.mark.parametrize(
    "options, named",
    [
        (["--lesions", "5", "2"], "--lesions"),
        (["--lesions", "-1", "2"], "--lesions"),
        (["--shape", "0", "8", "8"], "--shape"),
        (["--cases", "0"], "--cases"),
        (["--cases", "1"], "--cases"),
        (["--classes", "0"], "--classes"),
        (["--noise", "-1"], "--noise"),
        (["--noise", "nan"], "--noise"),
        (["--contrast", "inf"], "--contrast"),
        (["--dataset-id", "1000"], "--dataset-id"),
    ],
)
def test_synth_options_are_checked_where_they_are_parsed(tmp_path, capsys, options, named):
    with pytest.raises(SystemExit) as stopped:
        main(["synth", "--raw", str(tmp_path), "--shape", "16", "16", "16", *options])
    assert stopped.value.code == 2
    assert named in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing is written when an option is refused"


def test_synth_never_replaces_a_dataset_silently(tmp_path, capsys):
    common = ["synth", "--raw", str(tmp_path), "--dataset-id", "7", "--cases", "2", "--shape", "16", "16", "16"]
    assert main(common) == 0
    written = tmp_path / "Dataset007_SyntheticLesions"
    before = (written / "labelsTr" / "case_000.nii.gz").stat().st_mtime_ns
    assert main([*common, "--seed", "5"]) == 2
    refusal = capsys.readouterr().err
    assert "Dataset007_SyntheticLesions exists" in refusal and "--overwrite" in refusal
    assert (written / "labelsTr" / "case_000.nii.gz").stat().st_mtime_ns == before
    # a user's dataset with the same id under another name: nnU-Net would reject both, so never write beside it
    users = tmp_path / "Dataset008_MyLesions"
    (users / "labelsTr").mkdir(parents=True)
    (users / "dataset.json").write_text('{"name": "MyLesions"}')
    assert main([*common[:4], "8", *common[5:], "--overwrite"]) == 2
    assert "Dataset008_MyLesions" in capsys.readouterr().err
    assert not (tmp_path / "Dataset008_SyntheticLesions").exists()
    # --overwrite replaces a dataset synth wrote, whole (no stale cases of the earlier one are left)
    assert main([*common[:6], "3", *common[7:]]) == 2  # 3 cases into the existing 2-case dataset: refused
    assert main([*common[:6], "3", *common[7:], "--overwrite"]) == 0
    assert main([*common, "--overwrite"]) == 0
    assert sorted(p.name for p in (written / "labelsTr").iterdir()) == ["case_000.nii.gz", "case_001.nii.gz"]
