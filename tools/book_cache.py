"""Empty the book's execution cache when anything the chapters import or read changes.

    python tools/book_cache.py           # run by `make book` before jupyter-book
    python tools/book_cache.py --check   # run by `make pdf`: fails unless every chapter
                                         # is in the cache, so the PDF executes nothing

`jupyter-book build` keeps each executed chapter in a cache (jupyter-cache, in
`_build/.jupyter_cache`) and runs a chapter again only when its own code cells change:
a prose edit executes nothing, an edited cell re-executes its chapter only. The cache
cannot see what the cells import: the package, its data, the execution settings and
the installed libraries. This script fingerprints those (SHA-256 over the files of
`cnn/` and `pyproject.toml`, the `execute` section of `_config.yml`, `pip freeze` and
the Python version) and, when the fingerprint differs from the one recorded by the
previous build, deletes the cache, so that every chapter runs again. A fresh clone has
no cache: everything runs. It also deletes a PDF of the book older than its sources.
"""

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "_build" / ".jupyter_cache"
# the fingerprint of the inputs the cache was made with
STAMP = ROOT / "_build" / ".jupyter_cache.inputs"
# made by `make pdf`; the HTML book's first page links it
PDF = ROOT / "_build" / "latex" / "book.pdf"

#: What a chapter's results depend on besides its own cells (and the ``execute``
#: section of _config.yml: its other settings change how pages look, not what runs).
INPUTS = ["cnn", "pyproject.toml"]


def _files():
    for name in INPUTS:
        path = ROOT / name
        if path.is_dir():
            yield from sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            )
        else:
            yield path


def fingerprint():
    """SHA-256 over the inputs' paths and bytes, the installed packages and Python."""
    digest = hashlib.sha256()
    for path in _files():
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    execute = yaml.safe_load((ROOT / "_config.yml").read_text()).get("execute", {})
    digest.update(repr(sorted(execute.items())).encode())
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    digest.update(freeze.encode() + sys.version.encode())
    return digest.hexdigest()


def chapters():
    """The book's pages in reading order, as paths of their MyST sources."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = [toc["root"]] + [
        chapter["file"] for part in toc["parts"] for chapter in part["chapters"]
    ]
    return [ROOT / "book" / f"{name}.md" for name in names]


def recorded():
    """The fingerprint the cache was made with, or None."""
    return STAMP.read_text().strip() if STAMP.is_file() else None


def uncached():
    """The chapters that a build would execute: those whose code cells match no
    executed notebook in the cache (all of them if the inputs changed)."""
    if not CACHE.is_dir() or recorded() != fingerprint():
        return chapters()
    # the book's dependencies (the book extra), needed only to look inside the cache
    from jupyter_cache import get_cache
    from myst_nb.core.read import read_myst_markdown_notebook

    cache = get_cache(CACHE)
    missing = []
    for path in chapters():
        try:
            cache.match_cache_notebook(read_myst_markdown_notebook(path.read_text()))
        except KeyError:
            missing.append(path)
    return missing


def check():
    missing = uncached()
    if missing:
        names = ", ".join(path.stem for path in missing)
        sys.exit(
            f"book cache: {len(missing)} chapter(s) not executed for this code: "
            f"{names}. Run `make book` first (the PDF is made from the book's "
            "executed chapters and executes nothing itself)."
        )
    print(f"book cache: all {len(chapters())} chapters executed; nothing will run")


def drop_stale_pdf():
    """Delete the PDF if a chapter or an input changed since it was made, so that the
    HTML book never links a PDF older than itself (`make pdf` makes a new one)."""
    if not PDF.is_file():
        return
    made = PDF.stat().st_mtime
    sources = [*_files(), *chapters(), ROOT / "_toc.yml", ROOT / "_config.yml"]
    if any(path.stat().st_mtime > made for path in sources):
        PDF.unlink()
        print("book PDF: older than the book's sources; removed (make pdf remakes it)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail unless every chapter is cached"
    )
    if parser.parse_args().check:
        return check()
    new = fingerprint()
    if CACHE.exists() and recorded() != new:
        shutil.rmtree(CACHE)
        print("book cache: the package, data, configuration or libraries changed;")
        print("            every chapter will execute again")
    elif CACHE.exists():
        print("book cache: kept; only chapters whose code cells changed will execute")
    else:
        print("book cache: none yet; every chapter will execute")
    STAMP.parent.mkdir(parents=True, exist_ok=True)
    STAMP.write_text(new + "\n")
    drop_stale_pdf()


if __name__ == "__main__":
    main()
