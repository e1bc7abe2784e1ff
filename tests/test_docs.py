"""The documentation's relative links lead somewhere: every linked file exists, and every
``#anchor`` into a Markdown page names one of its headings (as GitHub makes them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in re.sub(r"```.*?```", "", page.read_text(), flags=re.S).splitlines():
        m = re.match(r"^#+\s+(.*)", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks are not links
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"^[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path) if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.name}: {broken}"


def test_usage_synopsis_names_every_edit_option():
    """docs/usage.md's `napari-ilat edit` synopsis keeps up with the parser."""
    import argparse

    from napari_ilat.cli.edit import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = (ROOT / "docs" / "usage.md").read_text()
    synopsis = text[text.index("napari-ilat edit IMAGE") :].split("```")[0]

    def named(option):  # as a whole word: "-o" is not inside "--top-k"
        return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", synopsis) is not None

    actions = [a for a in parser._actions if a.option_strings and "--help" not in a.option_strings]
    assert [a.option_strings for a in actions if not any(named(o) for o in a.option_strings)] == []
