"""The README stays what a newcomer reads in five minutes, and the docs site holds the rest:
the README is at most 300 lines and keeps its two commands, its links into docs/ resolve,
every docs page is in mkdocs.yml's nav (and every nav entry is a page), and the strict build
the test command runs fails on a broken link or a page left out of the nav.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
README_MAX_LINES = 300
LINK = re.compile(r"\]\(([^)\s]+)\)")


class _Loader(yaml.SafeLoader):
    """mkdocs.yml's `!!python/name:` tags (a fence's formatter) read as None."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)


def nav_pages(nav: Any) -> list[str]:
    """Every page path the nav names, in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in nav_pages(value)]
    return []


def nav_problems(root: Path) -> list[str]:
    config = yaml.load((root / "mkdocs.yml").read_text(), Loader=_Loader)  # noqa: S506
    docs = root / config.get("docs_dir", "docs")
    named = nav_pages(config.get("nav"))
    pages = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md"))
    return [f"{p}: not in mkdocs.yml's nav" for p in pages if p not in named] + [
        f"{p}: in the nav, no such page" for p in named if p not in pages
    ]


def slug(heading: str) -> str:
    """A heading's anchor as mkdocs (and GitHub) make it, for plain-text headings."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def readme_problems(root: Path) -> list[str]:
    text = (root / "README.md").read_text()
    problems = []
    if len(text.splitlines()) > README_MAX_LINES:
        lines = len(text.splitlines())
        problems.append(f"README.md: {lines} lines, more than {README_MAX_LINES}")
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # a URL
            continue
        path, _, anchor = target.partition("#")
        page = root / path
        if path and not page.exists():
            problems.append(f"README.md: link to {target}: no such file")
        elif anchor and path.endswith(".md"):
            headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
            if anchor not in {slug(h) for h in headings}:
                problems.append(f"README.md: link to {target}: no such heading")
    return problems


def test_readme_is_short_and_its_links_resolve() -> None:
    assert readme_problems(REPO) == []


def test_readme_keeps_its_two_commands() -> None:
    section = (REPO / "README.md").read_text().split("## Two commands", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split("#", 1)[0].strip() for line in block.splitlines()] == [
        "scripts/quickstart",
        "scripts/test",
    ]


def test_every_docs_page_is_in_the_nav() -> None:
    assert nav_problems(REPO) == []


def _scratch(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copy(REPO / "README.md", root / "README.md")
    return root


def test_the_checks_catch_a_long_readme_a_broken_link_and_an_orphan_page(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    assert readme_problems(root) == [] and nav_problems(root) == []
    readme = root / "README.md"
    text = readme.read_text()
    padding = "\n" * (README_MAX_LINES - len(text.splitlines()) + 1)
    readme.write_text(
        text + padding + "[a](docs/gone.md) [b](docs/security.md#nope) [c](https://x.org/y)\n"
    )
    (root / "docs" / "orphan.md").write_text("# orphan\n")
    assert readme_problems(root) == [
        f"README.md: {README_MAX_LINES + 2} lines, more than {README_MAX_LINES}",
        "README.md: link to docs/gone.md: no such file",
        "README.md: link to docs/security.md#nope: no such heading",
    ]
    assert nav_problems(root) == ["orphan.md: not in mkdocs.yml's nav"]
    (root / "mkdocs.yml").write_text(
        (root / "mkdocs.yml").read_text().replace("  - Security: security.md\n", "")
    )
    (root / "docs" / "security.md").unlink()
    assert nav_problems(root) == ["orphan.md: not in mkdocs.yml's nav"]


def test_the_strict_build_fails_on_a_broken_link_and_an_orphan_page(tmp_path: Path) -> None:
    # as scripts/test runs it; one planted defect of each kind in a scratch copy
    root = _scratch(tmp_path)
    page = root / "docs" / "security.md"
    page.write_text(page.read_text() + "\n[gone](gone.md) [nope](#no-such-heading)\n")
    (root / "docs" / "orphan.md").write_text("# orphan\n")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode != 0
    for warning in ("'gone.md'", "'#no-such-heading'", "orphan.md"):
        assert warning in result.stderr, result.stderr
