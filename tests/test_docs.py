"""The repository explains its own statistics: docs/statistics.md has numbered sections, every
`docs/statistics.md §N` cited in code, tests, notebooks and docs names one of them, no file
points at the old notes outside the repository, and the README links the document.

A citation may list several sections (`§5 and §6`, `§4, §5, §8`) and wrap onto a comment's or
docstring's next line.  In Python files and notebooks a `§` that belongs to no such citation
is refused: with a numbered document in the repository, a bare section sign is ambiguous.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "statistics.md"
# The old notes lived outside the repository; spelled in two parts so this file does not cite it.
OLD_NOTES = "stats" + "-methods"
SUFFIXES = {".py", ".md", ".ipynb", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".sh"}
SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "build", "dist", "__pycache__",
                ".mypy_cache", ".ruff_cache", ".pytest_cache"}  # fmt: skip
HEADING = re.compile(r"^## (\d+)\. (.+)$", re.MULTILINE)
# `statistics.md` then one or more §N joined by commas or "and"; whitespace, comment markers and
# a closing backtick may come between (a citation wraps like the text around it).
_GAP = r"[\s#`]*"
CITATION = re.compile(rf"statistics\.md{_GAP}(§\d+(?:{_GAP}(?:,|and){_GAP}§\d+)*)")
SECTION = re.compile(r"§(\d+)")


def files() -> Iterator[Path]:
    """Every text file of the repository (not its tools' caches)."""
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative.parts):
            continue
        if path.is_file() and path.suffix in SUFFIXES:
            yield path


def text_of(path: Path) -> str:
    """A notebook's cell sources (its JSON may escape characters), or the file's text."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".ipynb":
        return raw
    return "\n".join("".join(cell["source"]) for cell in json.loads(raw)["cells"])


def sections() -> dict[int, str]:
    found = [(int(n), title) for n, title in HEADING.findall(DOC.read_text(encoding="utf-8"))]
    numbers = [n for n, _ in found]
    assert len(set(numbers)) == len(numbers), f"a section number is used twice: {numbers}"
    return dict(found)


def cited(text: str) -> list[int]:
    return [int(n) for c in CITATION.finditer(text) for n in SECTION.findall(c.group(1))]


def slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def test_the_sections_are_numbered_one_by_one() -> None:
    numbers = list(sections())
    assert numbers == list(range(1, len(numbers) + 1))
    assert "Segments" in sections().values()  # the placeholder docs/segments.md fills in


def test_every_cited_section_exists() -> None:
    known = sections()
    missing, citations = [], 0
    for path in files():
        numbers = cited(text_of(path))
        citations += len(numbers)
        missing += [f"{path.relative_to(ROOT)}: §{n}" for n in numbers if n not in known]
    assert not missing, f"citations of sections docs/statistics.md does not have: {missing}"
    assert citations >= 30  # the analysis modules, their tests and the notebooks cite it


def test_the_document_cites_only_its_own_sections() -> None:
    text = DOC.read_text(encoding="utf-8")
    known = sections()
    assert {int(n) for n in SECTION.findall(text)} <= set(known)
    anchors = {slug(f"{n}. {title}") for n, title in known.items()}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links, "the index of sections links to them"
    assert [a for a in links if a not in anchors] == []


def test_no_file_cites_the_notes_outside_the_repository() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in files() if OLD_NOTES in text_of(p)]
    assert offenders == [], f"cite docs/statistics.md §N instead of {OLD_NOTES}.md: {offenders}"


@pytest.mark.parametrize("suffix", [".py", ".ipynb"])
def test_a_section_sign_in_code_names_its_document(suffix: str) -> None:
    bare = []
    for path in files():
        if path.suffix != suffix or path == Path(__file__).resolve():  # this file names the sign
            continue
        text = text_of(path)
        if text.count("§") != len(cited(text)):
            bare.append(str(path.relative_to(ROOT)))
    assert bare == [], f"a § outside a 'docs/statistics.md §N' citation: {bare}"


def test_the_readme_links_the_document() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    analysis = readme.split("## Statistics and decisions", 1)[1].split("\n## ", 1)[0]
    assert "](docs/statistics.md)" in analysis
