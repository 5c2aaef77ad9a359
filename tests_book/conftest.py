"""Checks of the built book, run by `make check-book` after `make book`
(never by `make test`)."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"  # jupyter-book builds next to _config.yml


def toc_pages():
    """Every page of the table of contents, in reading order (file names without
    extension)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [chapter["file"] for chapter in part["chapters"]]
    return pages


@pytest.fixture(scope="session")
def html_dir():
    if not (HTML / "index.html").is_file():
        # a missing build is a failure, not a skip
        pytest.fail(f"no built book at {HTML}: run `make book` first")
    return HTML
