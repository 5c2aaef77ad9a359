"""tools/book_cache.py: the book's execution cache is emptied exactly when what the
chapters import or read changes, and a PDF older than the book's sources is removed."""

import importlib.util
import os
import time
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "book_cache.py"


@pytest.fixture
def book(tmp_path, monkeypatch):
    """A copy of the tool pointed at a small book in tmp_path, with a cache in it."""
    spec = importlib.util.spec_from_file_location("book_cache", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (tmp_path / "cnn").mkdir()
    (tmp_path / "cnn" / "layer.py").write_text("x = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'cnn'\n")
    (tmp_path / "_config.yml").write_text("title: A\nexecute:\n  timeout: 900\n")
    (tmp_path / "_toc.yml").write_text("root: intro\nparts: []\n")
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    build = tmp_path / "_build"
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    monkeypatch.setattr(tool, "CACHE", build / ".jupyter_cache")
    monkeypatch.setattr(tool, "STAMP", build / ".jupyter_cache.inputs")
    monkeypatch.setattr(tool, "PDF", build / "latex" / "book.pdf")
    monkeypatch.setattr("sys.argv", ["book_cache.py"])
    tool.main()  # the first build: no cache yet
    tool.CACHE.mkdir(parents=True)  # as jupyter-book leaves it
    return tool


def _kept(tool):
    tool.main()
    return tool.CACHE.exists()


def test_the_cache_is_kept_while_nothing_it_depends_on_changes(book):
    assert _kept(book)
    (book.ROOT / "book" / "intro.md").write_text("# Intro\n\nNew prose.\n")
    (book.ROOT / "_config.yml").write_text("title: B\nexecute:\n  timeout: 900\n")
    assert _kept(book), "a chapter's text or the book's title emptied the cache"


@pytest.mark.parametrize(
    "path, text",
    [
        ("cnn/layer.py", "x = 2\n"),  # the package
        ("cnn/data.npz", "new data"),  # a new file in it
        ("pyproject.toml", "[project]\nname = 'cnn2'\n"),
        ("_config.yml", "title: A\nexecute:\n  timeout: 60\n"),  # how chapters run
    ],
)
def test_a_change_to_what_chapters_import_empties_the_cache(book, path, text):
    (book.ROOT / path).write_text(text)
    assert not _kept(book), f"a change to {path} kept the cache"
    book.CACHE.mkdir()
    assert _kept(book), "the new fingerprint was not recorded"


def test_check_fails_unless_every_chapter_is_cached(book):
    (book.ROOT / "cnn" / "layer.py").write_text("x = 3\n")
    with pytest.raises(SystemExit, match="not executed for this code: intro"):
        book.check()


def test_a_pdf_older_than_the_sources_is_removed(book):
    book.PDF.parent.mkdir(parents=True)
    book.PDF.write_bytes(b"%PDF")
    book.main()
    assert book.PDF.exists(), "a PDF newer than every source was removed"
    chapter = book.ROOT / "book" / "intro.md"
    later = time.time() + 10
    os.utime(chapter, (later, later))
    book.main()
    assert not book.PDF.exists()
