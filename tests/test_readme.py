"""The README stays short and true: it opens with the two commands, its links and layouts resolve.

A newcomer reads README.md in ten minutes (issue 21.8): at most 250 lines, the long parts in
docs/. The layout blocks (README's short one, docs/layout.md's module by module) name paths that
exist, so the structure drawn is the one in the tree; docs/layout.md names every module of the
package exactly once. The trace and score names the dashboards are built on are all in the README.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from video_summarizer import scores

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LAYOUT_DOC = ROOT / "docs" / "layout.md"
MAX_LINES = 250
TWO_COMMANDS = ['make run ARGS="--source cam0"', "make test"]
_TREE = re.compile(r"^(?:[│ ]*)(├── |└── )")
_LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


def _fenced_blocks(text: str) -> list[list[str]]:
    """The lines of each fenced code block, in order."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _layout_block(path: Path) -> list[str]:
    """The first fenced block after the '## Layout' heading (README) or the page's first (docs)."""
    text = path.read_text(encoding="utf-8")
    if path == README:
        assert "\n## Layout\n" in text, "README has no '## Layout' section"
        text = text.split("\n## Layout\n", 1)[1]
    return _fenced_blocks(text)[0]


def layout_paths(path: Path) -> list[str]:
    """Each path a layout block names, relative to the repository (tree entries under their folder)."""
    paths, parent = [], ""
    for line in _layout_block(path):
        if not line.strip():
            continue
        entry = _TREE.sub("", line).split()[0]
        if _TREE.match(line):
            paths.append(parent + entry)
        else:
            paths.append(entry)
            parent = entry if entry.endswith("/") else parent
    return paths


def test_the_readme_is_at_most_250_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; move the long parts to docs/"


def test_the_readme_opens_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    first = _fenced_blocks(text)[0]
    commands = [line.strip() for line in first if line.strip() and not line.lstrip().startswith("#")]
    assert commands == TWO_COMMANDS
    # nothing but the title and the paragraph saying what it does comes before them
    assert text.index("```") < text.index("\n## ")


def test_every_docs_link_resolves():
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    links = 0
    for page in pages:
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            links += 1
            assert (page.parent / target).is_file(), f"{page.relative_to(ROOT)} links to {target}, which is missing"
    assert links >= 10  # the README points to its docs pages


def test_the_readme_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"](docs/{p.name}" not in text]
    assert unlinked == [], f"docs pages the README does not point to: {unlinked}"


@pytest.mark.parametrize("page", [README, LAYOUT_DOC], ids=["README", "docs/layout.md"])
def test_every_path_of_a_layout_block_exists(page):
    paths = layout_paths(page)
    assert "real_time_summarizer.py" in paths and "video_summarizer/" in paths
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert missing == [], f"{page.name}'s layout names paths that are not in the tree: {missing}"


def test_docs_layout_lists_every_module_of_the_package_once():
    package = ROOT / "video_summarizer"
    modules = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    modules |= {p.name + "/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    listed = [p.removeprefix("video_summarizer/") for p in layout_paths(LAYOUT_DOC)
              if p.startswith("video_summarizer/") and p != "video_summarizer/"]
    twice = sorted({m for m in listed if listed.count(m) > 1})
    assert twice == [], f"listed more than once: {twice}"
    assert sorted(set(listed)) == sorted(modules)


def test_the_readme_names_the_trace_and_score_contract():
    text = README.read_text(encoding="utf-8")
    names = ["frame_processing", "face_recognition", "vlm_caption", "llm_summarization", "llm_summary",
             "video_summary", *scores.ALL_SCORE_NAMES, scores.GROUNDING_SCORE_NAME]
    assert [n for n in names if f"`{n}`" not in text and not re.search(rf"^\W*{n}\b", text, re.M)] == []
