"""The repository's text points only inside the repository.

Docstrings, comments, the README and ``docs/`` explain the code with what a clone holds: the
method is ``docs/science.md``, the system ``docs/architecture.md``, the reasons
``docs/decisions.md``. These tests scan every text file for

- references to issue or pull-request numbers (they mean nothing to a reader of a clone);
- names of documents the repository does not hold (a Markdown file that is not in the tree, the
  folder the project's notes were kept in);
- links in ``docs/`` and the README to repository paths that do not exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

#: What is scanned: the repository's own text (not the virtualenv, caches or build outputs).
SCANNED = (
    "services",
    "bench",
    "tests",
    "docs",
    "charts",
    "terraform",
    "k8s",
    "grafana",
    "scripts",
    ".github",
    ".ci",
    "README.md",
    "Makefile",
    "pyproject.toml",
)
SKIPPED_DIRS = {
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    ".terraform",
    "node_modules",
    "build",
    "dist",
}
#: Larger files are generated (Flux's components); none of ours comes close.
MAX_BYTES = 400_000

#: Markdown files the code writes at run time (``galpipe demo``, ``galpipe validate``): named in
#: the text, never in the tree.
GENERATED_DOCUMENTS = {"report.md"}

#: Files that running a documented command creates (Terraform's local state and backend config).
GENERATED_PATH_ENDINGS = (".tfstate", "backend.hcl")

#: Top-level folders whose paths, quoted in backticks in the docs, must exist.
PATH_ROOTS = ("services", "tests", "bench", "charts", "k8s", "terraform", "grafana", "docs")

_ISSUE_NUMBER = re.compile(
    r"(?<![a-z])(?:issues?|pull requests?|PRs?|tickets?)[\s_]*(?:no\.?\s*)?#?\s*\d+"
    r"|(?<![\w&/#\"'])#\d{1,5}\b(?![0-9a-fA-F])"
    r"|\bwave[- ]?\d+\b",
    re.IGNORECASE,
)
_THE_ISSUE = re.compile(
    r"\bthe issue's\b|\b(?:the|this) issue (?:asks|states|says|requires|wants)\b|\bas the issue\b",
    re.IGNORECASE,
)
_OUTSIDE_DOCUMENT = re.compile(
    r"\bmethod document\b|\bdesign card\b",
    re.IGNORECASE,
)
_MARKDOWN_NAME = re.compile(r"(?<![\w.-])([\w./-]*[\w-]\.md)\b")
_MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_BACKTICK_PATH = re.compile(r"`((?:" + "|".join(PATH_ROOTS) + r")/[^`\s]*)`")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
#: ``docs/decisions.md``, "Top-10 % average pooling" -- a pointer at a section of our docs.
_SECTION_POINTER = re.compile(r"docs/(\w+\.md)`*,\s*\"([^\"]+)\"")
_HEADING = re.compile(r"^#+\s+(.+?)\s*$", re.MULTILINE)


def text_files() -> Iterator[Path]:
    """Every text file of the scanned part of the repository, this file excepted."""
    for name in SCANNED:
        top = REPO_ROOT / name
        candidates = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in candidates:
            relative = path.relative_to(REPO_ROOT)
            if not path.is_file() or path.resolve() == Path(__file__).resolve():
                continue
            if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative.parts):
                continue
            if path.stat().st_size > MAX_BYTES:
                continue
            yield path


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def repository_names() -> set[str]:
    """Base names of every file in the repository's scanned part and at its top level."""
    names = {p.name for p in REPO_ROOT.iterdir() if p.is_file()}
    names.update(path.name for path in text_files())
    return names


def pointers(text: str, known_names: set[str]) -> list[str]:
    """What in ``text`` points outside the repository, one entry per finding.

    Parameters
    ----------
    text : str
        A file's text.
    known_names : set of str
        Base names of the files the repository holds.

    Returns
    -------
    list of str
        The offending snippets, each prefixed by its 1-based line number.
    """
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        without_urls = _URL.sub("", line)
        for pattern in (_ISSUE_NUMBER, _THE_ISSUE, _OUTSIDE_DOCUMENT):
            found.extend(f"{number}: {m.group(0)!r}" for m in pattern.finditer(line))
        for match in _MARKDOWN_NAME.finditer(without_urls):
            name = Path(match.group(1)).name
            if name not in known_names and name not in GENERATED_DOCUMENTS:
                found.append(f"{number}: {match.group(1)!r} is not in the repository")
    return found


def broken_links(document: Path, text: str) -> list[str]:
    """Links and backticked repository paths in a Markdown ``document`` that do not exist."""
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in _MARKDOWN_LINK.finditer(line):
            target = match.group(1).split("#", 1)[0]
            if not target or _URL.match(target) or target.startswith("mailto:"):
                continue
            if not (document.parent / target).exists():
                found.append(f"{number}: link {match.group(1)!r}")
        for match in _BACKTICK_PATH.finditer(line):
            path = match.group(1)
            if any(mark in path for mark in ("<", "*", "{", "…", "...", "$")):
                continue  # a pattern, not a path
            if not path.endswith(GENERATED_PATH_ENDINGS) and not (REPO_ROOT / path).exists():
                found.append(f"{number}: path {path!r}")
    return found


def section_pointers(text: str) -> list[tuple[str, str]]:
    """``(document, section title)`` of every pointer at a section of ``docs/`` in ``text``.

    Line breaks and indentation inside a wrapped title count as one space.
    """
    flat = re.sub(r"\s+", " ", text)
    return [(m.group(1), m.group(2)) for m in _SECTION_POINTER.finditer(flat)]


def unknown_sections(pointed: list[tuple[str, str]], headings: dict[str, list[str]]) -> list[str]:
    """The pointers whose document has no heading starting with the title."""
    return [
        f"{document}: {title!r}"
        for document, title in pointed
        if not any(h.startswith(title) for h in headings.get(document, []))
    ]


# -- the scanner itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "see issue 6 for the criterion",
        "def test_what_issue_7_asks_for():",
        "the issue's bound of 1e-6",
        "The issue asks for three retries",
        "fixed in #12.",
        "built in wave 1",
        "statement in ../notes/SCIENCE.md",
        "(see the method document)",
        "conventions: SCIENCE.md step 2",
    ],
)
def test_pointers_are_found(text: str) -> None:
    assert pointers(text, {"README.md", "science.md"}), text


@pytest.mark.parametrize(
    "text",
    [
        "np.random.default_rng(seed)  # seeds every draw",
        '"color": "#1f77b4", "fill": "#000000"',
        "see docs/science.md, 'Conventions'",
        "writes report.md and summary.json",
        "[cicd.md](docs/cicd.md) and https://example.org/x/README-old.md",
        "file an issue if the schema missed it",
        "the tissue 5 sample; an OIDC issuer 3",
    ],
)
def test_ordinary_text_is_not_a_pointer(text: str) -> None:
    assert pointers(text, {"README.md", "science.md", "cicd.md"}) == []


def test_broken_links_are_found(tmp_path: Path) -> None:
    document = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("")
    text = (
        "[ok](there.md) [gone](missing.md#part) [web](https://example.org) [anchor](#top)\n"
        "`services/galpipe/science/core.py` `services/galpipe/nowhere.py` `tests/unit/<pkg>/`\n"
    )
    assert broken_links(document, text) == [
        "1: link 'missing.md#part'",
        "2: path 'services/galpipe/nowhere.py'",
    ]


def test_section_pointers_are_checked() -> None:
    text = 'see ``docs/decisions.md``, "Top-10 %\n        average pooling" and docs/x.md, "Gone"'
    pointed = section_pointers(text)
    assert pointed == [("decisions.md", "Top-10 % average pooling"), ("x.md", "Gone")]
    headings = {"decisions.md": ["Top-10 % average pooling by default"]}
    assert unknown_sections(pointed, headings) == ["x.md: 'Gone'"]


# -- the repository --------------------------------------------------------------------------


def test_nothing_points_outside_the_repository() -> None:
    known = repository_names()
    offenders = []
    for path in text_files():
        text = read_text(path)
        if text is None:
            continue
        offenders.extend(f"{path.relative_to(REPO_ROOT)}:{hit}" for hit in pointers(text, known))
    assert offenders == [], (
        "point at docs/science.md, docs/architecture.md or docs/decisions.md instead:\n"
        + "\n".join(offenders)
    )


def test_links_in_the_docs_exist() -> None:
    documents = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    offenders = []
    for document in documents:
        found = broken_links(document, document.read_text(encoding="utf-8"))
        offenders.extend(f"{document.relative_to(REPO_ROOT)}:{hit}" for hit in found)
    assert offenders == [], "\n".join(offenders)


def test_the_method_and_the_map_are_in_the_repository() -> None:
    for name in ("science.md", "architecture.md", "decisions.md"):
        assert (REPO_ROOT / "docs" / name).stat().st_size > 1000, name


def test_pointers_name_sections_that_exist() -> None:
    headings = {
        path.name: _HEADING.findall(path.read_text(encoding="utf-8"))
        for path in (REPO_ROOT / "docs").glob("*.md")
    }
    offenders = []
    for path in text_files():
        text = read_text(path)
        if text is None:
            continue
        found = unknown_sections(section_pointers(text), headings)
        offenders.extend(f"{path.relative_to(REPO_ROOT)}: {hit}" for hit in found)
    assert offenders == [], "no such section:\n" + "\n".join(offenders)
