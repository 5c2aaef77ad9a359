"""The book's other editions, made from the same executed chapters as the HTML: every
chapter as a notebook (offered on its page), and the whole book as one PDF (`make pdf`).

Run by `make check-book` after `make book` and `make pdf`; a missing edition is a
failure, not a skip.
"""

import json
import re
import subprocess
import sys

import nbformat
import pytest
from conftest import ROOT, page_soup, toc_pages

PAGES = toc_pages()
PDF = ROOT / "_build" / "latex" / "book.pdf"
# Measured on this book (make pdf, 2026-12-02): 273 pages. The range allows for edits,
# and catches a PDF that lost its chapters or its figures.
PDF_PAGES = (220, 360)


def _notebook_link(page):
    links = [a["href"] for a in page_soup(page).select("a[href$='.ipynb']")]
    assert links, f"{page}: no notebook in the download menu"
    return links[0]


def _words(text):
    """Text compared across editions: no whitespace (lines break differently), no
    hyphens or minus signs (LaTeX hyphenates words at line ends) and no ligatures."""
    text = text.replace("\ufb01", "fi").replace("\ufb02", "fl")
    return re.sub(r"[\s\-\u00ad\u2010\u2011\u2212]+", "", text)


# ---- notebooks -------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_page_offers_its_notebook_with_the_page_outputs(html_dir, page):
    """The download menu links `_sources/<page>.ipynb`; it is a valid notebook whose
    code cells are the page's cells, in order, with the same printed outputs."""
    link = _notebook_link(page)
    assert link.endswith(f"_sources/{page}.ipynb"), link
    notebook = nbformat.read(html_dir / "_sources" / f"{page}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{page}: a cell was not executed"
    # the page leaves out the cells tagged remove-cell (glue, claims)
    code = [c for c in code if "remove-cell" not in c.metadata.get("tags", [])]
    cells = page_soup(page).select("div.cell")
    assert len(code) == len(cells), f"{page}: {len(code)} code cells, page {len(cells)}"
    for number, (cell, shown) in enumerate(zip(code, cells, strict=True), 1):
        page_text = _words(shown.get_text())
        for output in cell.outputs:
            if output.output_type == "stream":
                assert _words(output.text) in page_text, (
                    f"{page}, cell {number}: printed output differs from the page"
                )


@pytest.mark.parametrize("page", PAGES)
def test_notebook_reads_in_plain_jupyter(html_dir, page):
    """The text needs no MyST: glued numbers, package code and chapter references are
    written in, and the first cell says how to run it."""
    notebook = nbformat.read(html_dir / "_sources" / f"{page}.ipynb", as_version=4)
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and "pip install -e" in first.source
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    left = re.findall(r"\{(?:glue:\w+|literalinclude|doc)\}", text)
    assert not left, f"{page}: MyST left in the notebook's text: {left[:3]}"


@pytest.fixture(scope="module")
def package_only_kernel(tmp_path_factory):
    """A fresh virtual environment with only the package (and a Jupyter kernel)
    installed from this repository: no myst-nb, no Jupyter Book, no Keras."""
    venv = tmp_path_factory.mktemp("package-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, str(ROOT), "ipykernel"], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "ipykernel",
            "install",
            "--prefix",
            str(venv),
            "--name",
            "cnn-package-only",
        ],
        check=True,
        capture_output=True,
    )
    return venv


def _run_time(page):
    """The chapter's run time in seconds, from the line under its title."""
    text = page_soup(page).find("h1").find_next("p").get_text(" ", strip=True)
    found = re.search(r"took (?:(\d+) min )?(\d+) s", text)
    return int(found.group(1) or 0) * 60 + int(found.group(2))


def test_shortest_chapter_notebook_runs_outside_the_book(
    html_dir, package_only_kernel, tmp_path, monkeypatch
):
    """The notebook of the quickest chapter, fetched from its page's download link into
    an empty folder, runs top to bottom in a kernel that has only the package."""
    from nbclient import NotebookClient

    page = min(PAGES, key=_run_time)
    link = _notebook_link(page)
    notebook = nbformat.read(html_dir / link, as_version=4)
    (tmp_path / f"{page}.ipynb").write_text(json.dumps(notebook))
    monkeypatch.setenv("JUPYTER_PATH", str(package_only_kernel / "share" / "jupyter"))
    client = NotebookClient(
        notebook,
        kernel_name="cnn-package-only",
        timeout=600,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors, f"{page}: {errors[0]['ename']}: {errors[0]['evalue']}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{page}.ipynb"], (
        f"{page} wrote files into its folder"
    )


# ---- the PDF ---------------------------------------------------------------------


# A page's running head (the book's title) and foot ("14   Chapter 1. Convolution",
# "1.3. The code   13" or a page number alone): not the book's text.
FOOT = re.compile(r"^\s*(\d+|\d+\s{3,}\S.*|\S.*\s{3,}[\divxlc]+)\s*$")


@pytest.fixture(scope="module")
def pdf_text():
    """The PDF's text (Poppler's pdftotext), without running heads and feet, so that a
    sentence that goes on over a page break reads as one."""
    if not PDF.is_file():
        pytest.fail(f"no PDF at {PDF}: run `make pdf` after `make book`")
    text = subprocess.run(
        ["pdftotext", "-layout", str(PDF), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    title = page_soup("intro").find("title").get_text().split("—")[-1].strip()
    pages = []
    for page in text.split("\f"):
        lines = [line for line in page.splitlines() if line.strip()]
        if lines and lines[0].strip() == title:
            lines = lines[1:]
        if lines and FOOT.match(lines[-1]):
            lines = lines[:-1]
        pages.append("\n".join(lines))
    return "\n".join(pages)


def test_pdf_has_the_measured_number_of_pages():
    info = subprocess.run(["pdfinfo", str(PDF)], capture_output=True, text=True)
    pages = int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.M).group(1))
    low, high = PDF_PAGES
    assert low <= pages <= high, f"the PDF has {pages} pages, expected {low}-{high}"


def test_pdf_has_every_chapter(pdf_text):
    words = _words(pdf_text)
    for page in PAGES:
        title = page_soup(page).find("h1").get_text(strip=True).rstrip("#¶")
        assert _words(title) in words, f"the PDF lacks the chapter {title!r}"


def test_pdf_has_the_glued_numbers_of_the_html(pdf_text):
    """Every number the build glued into the HTML's text is in the PDF's, so both
    editions show the same results (the accuracies of SimpleCNN and deep_cnn among
    them)."""
    words = _words(pdf_text)
    missing = []
    for page in PAGES:
        for span in page_soup(page).select("span.pasted-text"):
            value = span.get_text(strip=True)
            if re.search(r"\d", value) and _words(value) not in words:
                missing.append(f"{page}: {value}")
    assert not missing, f"{len(missing)} glued values not in the PDF: {missing[:10]}"


def test_pdf_references_resolve(pdf_text):
    assert "??" not in pdf_text, "unresolved references (??) in the PDF"


def test_first_page_links_the_pdf(html_dir):
    link = page_soup("intro").select_one("p.pdf-edition a[href='book.pdf']")
    assert link is not None, "the first page does not link book.pdf"
    assert (html_dir / "book.pdf").read_bytes() == PDF.read_bytes()
