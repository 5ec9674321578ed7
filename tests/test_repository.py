"""What a reader of the installed package, the configs and the docs must be able to follow: papers
cited as papers, never by the development workspace's internal numbers or paths."""

from __future__ import annotations

import re

from conftest import REPO

#: internal references a user cannot look up (the workspace's paper numbers, issue numbers, paths)
INTERNAL_REFERENCE = re.compile(r"seed 0|issue [0-9]|seeds/README|shared/", re.IGNORECASE)
PUBLIC_TREES = ["nnunet_lesionloss", "configs", "scripts", "docs", "trainers", "README.md"]


def test_no_internal_references_in_the_package_configs_scripts_or_docs():
    found = []
    for tree in PUBLIC_TREES:
        root = REPO / tree
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts:
                continue
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            found += [
                f"{path.relative_to(REPO)}:{number}: {line.strip()}"
                for number, line in enumerate(text.splitlines(), 1)
                if INTERNAL_REFERENCE.search(line)
            ]
    assert not found, "cite papers as papers (docs/references.md):\n" + "\n".join(found)


def test_every_paper_short_name_used_in_the_docs_is_listed_in_references():
    references = (REPO / "docs" / "references.md").read_text()
    for short_name in (
        "Luu et al. 2026",
        "Rachmadi et al. 2024",
        "Kofler et al. 2023",
        "Joshi 2026",
        "Kundu et al. 2026",
    ):
        assert short_name in references, short_name


#: a trainer name as the docs write it; ``*`` marks a shell pattern (``applies_to:``), ``__`` a results
#: folder (``nnUNetTrainerCATMIL__nnUNetPlans__3d_fullres``)
TRAINER_NAME = re.compile(r"\bnnUNetTrainer[A-Za-z0-9_]*\*?")


def loop_trainer_names(text: str) -> list[str]:
    """The names that shell loops and brace lists build: ``for t in A B; do ... nnUNetTrainer${t}_S``
    and ``nnUNetTrainer{A,B}_S`` (the commands of "Reproducing a paper")."""
    names = []
    for loop in re.finditer(r"for t in ([^;\n]+); do\n(.*?)\ndone", text, re.DOTALL):
        for suffix in re.findall(r"nnUNetTrainer\$\{?t\}?(\w*)", loop.group(2)):
            names += [f"nnUNetTrainer{t}{suffix}" for t in loop.group(1).split()]
    for braces in re.finditer(r"nnUNetTrainer\{([^}]+)\}(\w*)", text):
        names += [f"nnUNetTrainer{t}{braces.group(2)}" for t in braces.group(1).split(",")]
    return names


def test_every_trainer_the_docs_name_is_shipped():
    """A command copied from the README or a script must name a trainer nnU-Net can find: ours, or
    nnU-Net's own ``nnUNetTrainer``."""
    from nnunet_lesionloss.installation import shipped_trainer_names

    known = set(shipped_trainer_names()) | {"nnUNetTrainer"}
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "scripts").glob("*.sh"))]
    files += sorted((REPO / "configs").glob("*.yaml"))
    unknown = []
    for path in files:
        text = path.read_text()
        for name in TRAINER_NAME.findall(text) + loop_trainer_names(text):
            trainer = name.split("__")[0]
            if name.endswith("*"):
                if not any(k.startswith(trainer.rstrip("*")) for k in known):
                    unknown.append(f"{path.relative_to(REPO)}: {name}")
            elif trainer not in known:
                unknown.append(f"{path.relative_to(REPO)}: {name}")
    assert not unknown, "names no shipped trainer:\n" + "\n".join(unknown)
