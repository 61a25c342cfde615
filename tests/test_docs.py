"""The README and docs/: the README stays short, and every link and every doc name in the code resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 300

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target) and ![alt](target), with an optional "title" after the target
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
DOC_NAME = re.compile(r"\bdocs/[A-Za-z0-9_.-]+\.md\b")


def prose(text: str) -> str:
    """Markdown without fenced code blocks and code spans, where brackets are code, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def relative_links(text: str) -> list[str]:
    """Link and image targets that point at files of this repository (no URLs, no #anchors)."""
    out = []
    for target in LINK.findall(prose(text)):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http(s)://, mailto:, ... and anchors within the page
        out.append(target.split("#", 1)[0].split("?", 1)[0])
    return out


def code_files() -> list[Path]:
    files = [*ROOT.glob("sweep/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("notebooks/*.ipynb")]
    files += [p for folder in ("scripts", "benchmarks") for p in (ROOT / folder).glob("*") if p.is_file()]
    return sorted(files)


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move depth to docs/ (at most {MAX_README_LINES})"


def test_link_parser() -> None:
    text = ("[a](guide/a.md) ![img](b.png \"title\") [web](https://x.org) [anchor](#top) [c](c.md#part)\n"
            "`[not](x.md)`\n```\n[not](y.md)\n```\n[nested [brackets]](d.md)\n")
    assert relative_links(text) == ["guide/a.md", "b.png", "c.md", "d.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    missing = [t for t in relative_links(page.read_text(encoding="utf-8")) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"


def test_docs_named_in_code_exist() -> None:
    missing = sorted({
        f"{path.relative_to(ROOT)}: {name}"
        for path in code_files()
        for name in DOC_NAME.findall(path.read_text(encoding="utf-8", errors="replace"))
        if not (ROOT / name).is_file()
    })
    assert not missing, "code names docs that do not exist:\n" + "\n".join(missing)
