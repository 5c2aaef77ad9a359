"""The first page links the whole book as one PDF, once `make pdf` has made it.

`make pdf` builds `_build/latex/book.pdf` with Jupyter Book's LaTeX builder from the
chapters the HTML build executed, then builds the HTML again (from the cache: nothing
executes). When the PDF is there, this extension copies it to `_build/html/book.pdf`
and adds a line that links it after the first page's opening paragraph. The first page
is read again whenever the PDF appears, changes or goes, so the link is never stale or
dead.
"""

import shutil
from datetime import datetime, timezone
from pathlib import Path

from docutils import nodes

NAME = "book.pdf"


def _pdf(app):
    return Path(app.outdir).parent / "latex" / NAME


def _state(app):
    """When the PDF was made (ns), or None: what the first page's link was made for."""
    pdf = _pdf(app)
    return pdf.stat().st_mtime_ns if pdf.is_file() else None


def _html(app):
    return app.builder.format == "html"


def _reread_first_page(app, env, added, changed, removed):
    if _html(app) and getattr(env, "pdf_edition", None) != _state(app):
        return [app.config.root_doc]
    return []


def _link(app, doctree):
    if not _html(app) or app.env.docname != app.config.root_doc:
        return
    app.env.pdf_edition = _state(app)
    if app.env.pdf_edition is None:
        return
    pdf = _pdf(app)
    made = datetime.fromtimestamp(pdf.stat().st_mtime, timezone.utc)
    line = nodes.paragraph(
        "",
        "",
        nodes.Text("The whole book is also one PDF, for paper or offline reading: "),
        nodes.reference("", NAME, refuri=NAME),
        nodes.Text(
            f" ({pdf.stat().st_size / 1e6:.1f} MB, made {made:%Y-%m-%d %H:%M} UTC)."
        ),
        classes=["pdf-edition"],
    )
    # after the title and the paragraph under it (the chapter's run time)
    title = next(iter(doctree.findall(nodes.title)))
    section = title.parent
    first = next(
        (i for i, node in enumerate(section) if isinstance(node, nodes.paragraph)),
        section.index(title),
    )
    section.insert(first + 1, line)


def _copy(app, exception):
    if exception is None and _html(app) and _pdf(app).is_file():
        shutil.copyfile(_pdf(app), Path(app.outdir) / NAME)


def setup(app):
    app.connect("env-get-outdated", _reread_first_page)
    app.connect("doctree-read", _link)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
