"""What a reader of the installed package, the configs and the docs must be able to follow: papers
cited as papers, never by the development workspace's internal numbers or paths; no file that looks for
data outside the repository; a README that is a map, docs pages with their contents, links that reach
their target; every trainer the docs name shipped; a documented table that its script reproduces."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

#: internal references a user cannot look up (the workspace's paper numbers, issue numbers, paths)
INTERNAL_REFERENCE = re.compile(r"seed 0|issue [0-9]|seeds/README|shared/", re.IGNORECASE)
PUBLIC_TREES = ["nnunet_lesionloss", "configs", "scripts", "docs", "trainers", "README.md"]


def lines_matching(trees: list[str], pattern: re.Pattern) -> list[str]:
    """``path:line: text`` of every line of the text files under ``trees`` (folders or files of the repository)
    that ``pattern`` finds; binary files (images, figures) are skipped."""
    found = []
    for tree in trees:
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
                if pattern.search(line)
            ]
    return found


def test_no_internal_references_in_the_package_configs_scripts_or_docs():
    found = lines_matching(PUBLIC_TREES, INTERNAL_REFERENCE)
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


#: what points at a folder outside the repository: the development workspace's data folder (as a relative
#: path, a path joined in Python, or an absolute one). Written so that this file does not match itself.
OUTSIDE_FOLDER = re.compile(r"\.\./shared|shared[/]golden|/\s*\"(?:shared|golden)\"|/wor[k]/")
PRODUCT = ["nnunet_lesionloss", "scripts", "tests", "docs", "README.md", ".ci", "configs", "trainers", "pyproject.toml"]


def test_no_file_of_the_product_refers_to_a_folder_outside_the_repository():
    """Data lives in the repository (tests/data) or comes through an explicit option (``--data DIR``):
    nothing looks for a sibling folder of the checkout."""
    found = lines_matching(PRODUCT, OUTSIDE_FOLDER)
    assert not found, "refers to a folder outside the repository (use tests/data or --data DIR):\n" + "\n".join(found)


# --------------------------------------------------------------------------- the README and the docs pages
FENCED_CODE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
HEADING = re.compile(r"^(#{1,6}) (.+)$", re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOCS = sorted((REPO / "docs").glob("*.md"))


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a page: lower case, punctuation dropped, spaces to hyphens,
    a repeated anchor numbered (-1, -2, ...)."""
    anchors, seen = set(), {}
    for _, title in HEADING.findall(FENCED_CODE.sub("", markdown)):
        anchor = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def test_every_link_of_the_readme_and_the_docs_reaches_a_file_and_a_heading():
    broken = []
    for page in [REPO / "README.md", *DOCS, REPO / "tests" / "data" / "open_ms_data" / "README.md"]:
        text = FENCED_CODE.sub("", page.read_text())
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and anchor not in github_anchors(linked.read_text()):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_docs_page_opens_with_a_table_of_contents_of_its_sections():
    missing = []
    for page in DOCS:
        text = page.read_text()
        body = FENCED_CODE.sub("", text)
        sections = [title for level, title in HEADING.findall(body) if level == "##"]
        contents = body[: body.index("\n## ")] if "\n## " in body else body
        if "Contents" not in contents:
            missing.append(f"{page.name}: no table of contents before its first section")
            continue
        linked = set(re.findall(r"\]\(#([^)]+)\)", contents))
        anchors = github_anchors("\n".join(f"## {title}" for title in sections))
        missing += [f"{page.name}: section #{a} not in its contents" for a in sorted(anchors - linked)]
    assert not missing, "\n".join(missing)


def test_the_readme_is_a_map_with_the_two_commands_near_the_top():
    text = (REPO / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 300, f"the README has {len(lines)} lines: move the details to a docs page"
    head = "\n".join(lines[:40])
    assert "\nbash scripts/demo.sh     # main job" in head and "\nbash scripts/test.sh     # tests" in head
    assert "## Where things live" in "\n".join(lines[:80])
    for page in DOCS:
        assert f"(docs/{page.name})" in text, f"the README does not link docs/{page.name}"


# --------------------------------------------------------------------------- a documented table, reproduced
def _table_numbers(rows: list[str]) -> list[list[float]]:
    """The numbers of each Markdown row after its first two cells (case and rule)."""
    return [[float(x) for x in re.findall(r"\d+(?:\.\d+)?", "|".join(row.split("|")[3:]))] for row in rows]


def _lesion_matching_rows(*arguments: str) -> tuple[list[str], list[str]]:
    """(the rows docs/metrics.md quotes, the rows scripts/lesion_matching_cases.py prints) after the header."""
    metrics = (REPO / "docs" / "metrics.md").read_text()
    start = metrics.index("| case | rule | reference / predicted lesions |")
    documented = [line for line in metrics[start:].split("\n\n")[0].splitlines()[2:]]
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "lesion_matching_cases.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    return documented, printed


def test_the_lesion_matching_table_of_the_docs_is_what_the_script_prints_on_the_repository_data():
    """docs/metrics.md's blob and Open MS Data rows, reproduced on a fresh clone (the mask is in tests/data)."""
    documented, printed = _lesion_matching_rows()
    blob = [r for r in printed if r.startswith("| blob over 88 % of the image |")]
    patch = [r for r in printed if "as a training patch" in r]
    ms = [r for r in printed if r.startswith("| MS patient01")]
    assert len(blob) == 2 and len(patch) == 1 and len(ms) == 4
    assert _table_numbers(documented[:3]) == _table_numbers(blob + patch)
    assert _table_numbers(documented[3:7]) == _table_numbers(ms)
    assert not any("BraTS" in r for r in printed)


def test_the_brats_rows_of_the_lesion_matching_table(brats_mets_sample):
    """The rows of the BraTS 2025 evaluator's sample (``pytest --data=DIR``, DIR/brats_mets)."""
    documented, printed = _lesion_matching_rows("--data", str(brats_mets_sample.parent))
    rows = {region: [r for r in printed if f"BraTS-METS sample, {region} " in r] for region in ("wt", "tc", "et")}
    assert all(len(r) == 2 for r in rows.values())
    assert _table_numbers(documented[7:9]) == _table_numbers(rows["wt"])
    # "same, tc and et | both rules | 56 / 54 | 0.900, 0.850 | recall | precision | F1"
    lesions, dice, rates = (lambda n: (n[:2], n[2:4], n[4:]))(_table_numbers(documented[9:10])[0])
    for region, expected_dice in zip(("tc", "et"), dice):
        for numbers in _table_numbers(rows[region]):
            assert numbers == [*lesions, expected_dice, *rates]
