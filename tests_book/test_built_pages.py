"""The built HTML: every chapter is there, no cell shows an error, and every figure is
on disk."""

import re

import pytest
from conftest import page_soup, toc_pages

PAGES = toc_pages()
# Output classes that myst-nb gives to error and stderr outputs.
ERROR_CLASSES = ("traceback", "stderr", "error")


def test_no_execution_reports(html_dir):
    """Jupyter Book writes reports/*.err.log for every notebook whose execution
    failed."""
    reports = (
        sorted((html_dir / "reports").glob("*.log"))
        if (html_dir / "reports").exists()
        else []
    )
    assert not reports, f"execution failed: {[r.name for r in reports]}"


@pytest.mark.parametrize("page", PAGES)
def test_page_has_no_error_output(html_dir, page):
    """No cell output is an error, a traceback or stderr; no cell is allowed to raise.

    A chapter that shows an error on purpose runs it inside ``cnn.book.expect_error``,
    which prints the message as ordinary output and fails the build if the error is not
    raised; the ``raises-exception`` tag, which lets a cell pass whether or not it
    raises, is not used.
    """
    bad = []
    for cell in page_soup(page).select("div.cell"):
        assert "tag_raises-exception" not in cell.get("class", []), (
            f"{page}: a cell is tagged raises-exception"
        )
        for output in cell.select("div.output"):
            classes = set(output.get("class", []))
            if classes & set(ERROR_CLASSES):
                bad.append(output.get_text()[:300])
    assert not bad, f"{page}: error outputs:\n" + "\n---\n".join(bad)


@pytest.mark.parametrize("page", PAGES)
def test_page_figures_exist(html_dir, page):
    """Every image on the page is a non-empty file of the build."""
    missing = []
    for img in page_soup(page).find_all("img"):
        src = img.get("src", "")
        if src.startswith("data:"):
            continue
        path = html_dir / src.split("?")[0]
        if not path.is_file() or path.stat().st_size == 0:
            missing.append(src)
    assert not missing, f"{page}: missing images {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_page_shows_results(html_dir, page):
    """Every chapter executed code and shows at least one figure or table computed by
    the build."""
    soup = page_soup(page)
    assert soup.select("div.cell"), f"{page}: no executed cells"
    assert soup.find_all("img") or soup.find_all("table"), (
        f"{page}: no figure and no table"
    )


@pytest.mark.parametrize("page", PAGES)
def test_no_unresolved_glue_or_role(html_dir, page):
    """Glued numbers were substituted: no literal {glue:...} role is left in the
    text."""
    text = page_soup(page).get_text()
    assert "{glue" not in text and "{eq}" not in text and "{ref}" not in text, (
        f"{page}: unresolved role"
    )


@pytest.mark.parametrize("page", PAGES)
def test_page_opens_with_its_run_time(html_dir, page):
    """Every chapter says, under its title, how long its code took to run in this
    build."""
    soup = page_soup(page)
    heading = soup.find("h1")
    assert heading is not None, f"{page}: no title"
    opening = heading.find_next("p")
    text = opening.get_text(" ", strip=True) if opening else ""
    assert re.search(
        r"Running this chapter.s code took \d+( min \d+)? s when this book was built",
        text,
    ), (
        f"{page}: the first paragraph does not give the chapter's run time: "
        f"{text[:200]!r}"
    )


@pytest.mark.parametrize("page", PAGES)
def test_glued_numbers_read_as_numbers(html_dir, page):
    """A NumPy scalar glued as is shows as ``np.float64(98.95)`` (and fails any format
    spec): glue floats."""
    pasted = [
        span.get_text()
        for span in page_soup(page).select(".pasted-text, .pasted-inline")
    ]
    bad = [text for text in pasted if re.match(r"\(?'?np\.", text)]
    assert not bad, f"{page}: glued values shown as NumPy reprs: {bad[:5]}"


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_each_script_once(html_dir, page):
    """No script appears twice in a page: a second inline ``const`` declaration (as
    sphinx-thebe's THEBE_JS_URL was, before book/_ext/unique_scripts.py) is a
    JavaScript error."""
    scripts = [
        script.get("src") or script.get_text()
        for script in page_soup(page).find_all("script")
        if script.get("type") in (None, "text/javascript", "module")
    ]
    repeated = sorted({s[:100] for s in scripts if scripts.count(s) > 1})
    assert not repeated, f"{page}: scripts included more than once: {repeated}"
