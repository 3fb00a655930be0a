"""Repository hygiene: comments and docs cite only files inside the repository.

The original code's behaviour and our deviations are documented in docs/fidelity.md; code cites its
anchors (``docs/fidelity.md#f-split``) or states the reason inline. Notes kept outside the repository
(per-topic reference notes, numbered defect lists) cannot be opened by a maintainer, so citing them is
an error. Reading reference *data* from ``../shared`` in tests is fine; only citations are checked.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIDELITY = REPO_ROOT / "docs" / "fidelity.md"
THIS_FILE = Path(__file__).resolve().relative_to(REPO_ROOT).as_posix()

# Names of reference notes that live outside the repository.
_OUTSIDE_NOTES = (
    "tasks",
    "method",
    "training",
    "metrics",
    "checkpoint-facts",
    "official-code-defects",
    "pitfalls",
    "paper_tables",
)

OUTSIDE_CITATION = re.compile(
    # a bare note name; a path inside the repository (docs/metrics.md) is preceded by "/" and allowed
    r"(?<![\w/.-])(?:" + "|".join(re.escape(n) for n in _OUTSIDE_NOTES) + r")\.md\b"
    # numbered entries of an outside defect list ("defect" + letter and number) or pitfall section
    r"|\bdefects?\s+[A-Z]\d+\b"
    r"|\bpitfalls\s+[A-Z]\b"
    # the folders those notes sit in
    r"|\bshared/(?:spec|anchors)\b"
    r"|\bspec/[\w.-]+\.md\b"
    # "as in the spec": a document that is not in the repository
    r"|\b[Tt]he spec\b"
)
# "docs/fidelity.md#f-split", and the short "#f-kshot" after a first full link or inside the page
FIDELITY_LINK = re.compile(r"(?:fidelity\.md|(?<![\w&]))#(f-[a-z][a-z0-9-]*)")
ANCHOR = re.compile(r'<a id="([\w-]+)"></a>')

# Data rows are quoted text, not prose written for this project.
_NOT_PROSE = ("tests/fixtures/",)


def _tracked_text_files() -> list[tuple[str, str]]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    files = []
    for name in out.decode().split("\0"):
        if not name or name == THIS_FILE or name.startswith(_NOT_PROSE):
            continue
        path = REPO_ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        try:
            files.append((name, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:  # binary file
            continue
    return files


def test_no_citation_of_documents_outside_the_repository():
    hits = [
        f"{name}:{lineno}: {line.strip()}"
        for name, text in _tracked_text_files()
        for lineno, line in enumerate(text.splitlines(), 1)
        if OUTSIDE_CITATION.search(line)
    ]
    assert hits == [], (
        "these lines cite documents outside the repository; cite docs/fidelity.md#<anchor> or state the "
        "reason inline:\n" + "\n".join(hits)
    )


def test_every_cited_fidelity_anchor_exists():
    anchors = set(ANCHOR.findall(FIDELITY.read_text(encoding="utf-8")))
    assert anchors, "docs/fidelity.md defines no anchors"
    missing = [
        f"{name}: #{anchor}"
        for name, text in _tracked_text_files()
        for anchor in FIDELITY_LINK.findall(text)
        if anchor not in anchors
    ]
    assert missing == [], "links to anchors that docs/fidelity.md does not define:\n" + "\n".join(missing)
