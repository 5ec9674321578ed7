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
