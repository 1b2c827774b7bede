"""The docs stay true: the configuration page matches config.py, the README stays a front door,
and no relative link points at a file that is not there."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]
README_MAX_BYTES = 12 * 1024
# [text](target) and ![alt](target); the target ends at whitespace or ")"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def _config_page_script() -> ModuleType:
    path = REPO / "docs" / "make_config_page.py"
    spec = importlib.util.spec_from_file_location("make_config_page", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_page_is_what_config_py_generates() -> None:
    page = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == _config_page_script().render(), (
        "docs/configuration.md is out of date with colorgan/config.py: "
        "run .venv/bin/python docs/make_config_page.py"
    )


def test_configuration_page_lists_every_key() -> None:
    import dataclasses
    import typing

    from colorgan.config import Config

    page = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for section, section_type in typing.get_type_hints(Config).items():
        for f in dataclasses.fields(section_type):
            assert f"| `{section}.{f.name}` |" in page


def test_readme_is_at_most_12_kb() -> None:
    size = (REPO / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail to docs/"


def _relative_links(page: Path) -> list[str]:
    text = CODE.sub("", page.read_text(encoding="utf-8"))  # links inside code are not links
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of Markdown file `page`."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_relative_links_point_to_files_that_exist() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target in _relative_links(page):
            path, _, anchor = unquote(target).partition("#")
            file = page.parent / path
            if not file.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "links to missing files: " + ", ".join(broken)


def test_the_link_check_sees_links() -> None:
    readme = _relative_links(REPO / "README.md")
    assert any(t.startswith("docs/") for t in readme)
