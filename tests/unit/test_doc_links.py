"""Every relative link in the README and docs/ resolves inside the repository (no ../shared, no typos)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
# [text](target) and <a href="target">, minus code spans (which may show link syntax as an example).
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|href=\"([^\"]+)\"")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def _links(doc: Path) -> list[str]:
    text = CODE.sub("", doc.read_text())
    return [a or b for a, b in LINK.findall(text)]


def _heading_anchors(doc: Path) -> set[str]:
    anchors = set()
    for line in doc.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("doc", [d for d in DOCS if d.exists()], ids=lambda d: str(d.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    broken = []
    for link in _links(doc):
        if re.match(r"^[a-z]+:", link):  # http:, https:, mailto: are not ours to check offline
            continue
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        missing = not target.is_relative_to(ROOT) or not target.exists()
        if missing or (anchor and target.suffix == ".md" and anchor not in _heading_anchors(target)):
            broken.append(link)
    assert broken == []


# The README is a quick start; these carry the rest, and each must be reachable from it.
LINKED_FROM_README = ("docs/architecture.md", "docs/decisions.md", "docs/settings.md", "docs/api.md",
                      "docs/operating.md", "docs/contributing.md")


def test_the_readme_links_every_doc() -> None:
    links = _links(ROOT / "README.md")
    assert [doc for doc in LINKED_FROM_README if doc not in links] == []
    assert [doc for doc in LINKED_FROM_README if not (ROOT / doc).exists()] == []
    assert "../shared" not in (ROOT / "README.md").read_text()


def test_the_readme_stays_a_quick_start() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 80


def test_every_doc_is_checked() -> None:
    assert {str(d.relative_to(ROOT)) for d in DOCS if d.exists()} >= {"README.md", *LINKED_FROM_README}
