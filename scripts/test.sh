#!/usr/bin/env bash
# The test command of the README: installs the package with its test extras, then runs the suite.
# Works on a fresh clone (CPU only; the suite took 21 min 25 s on a fresh clone on 2 cores, with the slow nnU-Net trainings).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet -e ".[test]"
# the combination this run tested (the README's "Tested versions" quotes one such line)
python3 - <<'PY'
import platform
from importlib import metadata

names = ["torch", "nnunetv2", "batchgeneratorsv2", "connected-components-3d", "numba", "panoptica", "SimpleITK", "numpy"]
print("tested with: Python " + platform.python_version() + ", " + ", ".join(f"{n} {metadata.version(n)}" for n in names))
PY
# pytest reads "--data DIR" as an option and a path before it knows the option (tests/conftest.py defines it),
# so a folder outside the repository would become pytest's root; the "--data=DIR" form is passed whole
args=()
while [[ $# -gt 0 ]]; do
    if [[ $1 == --data && $# -gt 1 ]]; then
        args+=("--data=$2")
        shift 2
    else
        args+=("$1")
        shift
    fi
done
python3 -m pytest -q -p no:cacheprovider --timeout 1800 ${args[@]+"${args[@]}"}
