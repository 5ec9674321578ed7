"""The benchmark scripts behind docs/benchmarks.md's tables run (at a tiny size, on the CPU) and print them.

``scripts/gpu_benchmarks.sh --smoke`` runs the same commands as the GPU run with tiny sizes, so the
script handed to a GPU machine is exercised here. No timing is asserted: the numbers are the
scripts' output, not test results.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_script_prints_every_table_at_a_tiny_size(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        ["bash", str(REPOSITORY / "scripts" / "gpu_benchmarks.sh"), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tables = {path.name: path.read_text() for path in tmp_path.iterdir()}
    assert sorted(tables) == [
        "loader.md",
        "losses_memory.md",
        "losses_time_bf16.md",
        "losses_time_fp16.md",
        "training_step_128.md",
        "training_step_demo_patch.md",
    ]
    assert "| CC Dice+CE | 8 |" in tables["losses_time_fp16.md"] and "autocast fp16" in tables["losses_time_fp16.md"]
    assert "autocast bf16" in tables["losses_time_bf16.md"]
    assert "Cost of the input checks (validate=True)" in tables["losses_time_fp16.md"]
    assert re.search(r"\| CC Dice\+CE \| -?\d+\.\d% \|", tables["losses_time_fp16.md"])
    assert "| + IWL-CC Dice+CE (MiB more) |" in tables["losses_memory.md"]
    assert "| 24³ | 4 |" in tables["loader.md"] and "nnU-Net transforms" in tables["loader.md"]
    for trainer in ("nnUNetTrainerICI", "nnUNetTrainerCC", "nnUNetTrainerInvWeight"):
        assert f"| {trainer} |" in tables["training_step_demo_patch.md"]
    assert (
        "| nnUNetTrainerBlob |" in tables["training_step_128.md"] and "patch 16×16×16" in tables["training_step_128.md"]
    )


def test_gradient_ratio_script_prints_its_table_with_lesion_free_patches():
    result = subprocess.run(
        [
            sys.executable,
            str(REPOSITORY / "scripts" / "grad_ratios.py"),
            *("--size", "16", "--lesions", "1", "--seeds", "1", "--threads", "1", "--empty-samples", "1"),
            *("--measure", "value", "--only", "CC, shipped default", "InvWeight, shipped default"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(1 lesion-free patches per batch)" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "shipped default" in line]
    assert len(rows) >= 2, result.stdout
    for row in rows:  # "term (L_seg)" in each of the four states
        assert all(re.fullmatch(r" \S+ \(\S+\) ", cell) for cell in row.split("|")[2:6]), row


def test_dynamic_candidate_benchmark_prints_its_table_and_the_implementations_agree():
    result = subprocess.run(
        [
            sys.executable,
            str(REPOSITORY / "scripts" / "bench_dynamic_candidates.py"),
            *("--shape", "30", "34", "30", "--lesions", "4", "--false-positives", "8", "--repeats", "1"),
            *("--per-step", "--reference"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| dynamic")]
    assert len(rows) == 3 and all(row.endswith("| yes |") for row in rows), result.stdout
    assert "with nothing cached (numba compiles)" in result.stdout


def test_repeat_coverage_script_prints_its_tables():
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "scripts" / "repeat_coverage.py")]
        + ["--studies", "4", "--repeats", "2", "3", "--resamples", "100"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| two-level, Student-t | two-level, resample | cases only |" in result.stdout
    assert "| retraining dominates (0.01 / 0.03 / 0.02) | 3 |" in result.stdout
    assert "| scenario | repeats | separable difference | called better |" in result.stdout
