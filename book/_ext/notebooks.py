"""Every chapter as a notebook: each page's download menu offers the `.ipynb` that this
build executed, with its outputs.

myst-nb writes each chapter to `_build/jupyter_execute/<chapter>.ipynb`; when the HTML
build finishes, this extension copies it, with the outputs from the execution cache, to
`_build/html/_sources/`, where the theme's download menu links it (`ipynb_source`). On
the way, the copy is made readable in plain Jupyter, which knows no MyST:

- a first cell says what it is and what to install to run it;
- the package code that the page includes with `literalinclude` is written out as a
  Python code block (the page shows it; a notebook would show only the directive);
- `{glue:text}` and `{glue:md}` references become the values this build glued, formatted
  as on the page, and `{doc}` references the chapter's title.

The code cells and their outputs are exactly those of the page. The cells import the
package (`cnn`), never files of the book's folder, so a notebook runs anywhere the
package is installed.
"""

import functools
import json
import os
import posixpath
import re
from pathlib import Path

import nbformat
from myst_nb.core.variables import format_plain_text
from sphinx.directives.code import LiteralIncludeReader
from sphinx.util import logging

logger = logging.getLogger(__name__)

INCLUDE = re.compile(
    r"^```\{literalinclude\}[ \t]+(\S+)[ \t]*\n((?::[^\n]*\n)*)```[ \t]*$", re.M
)
GLUE = re.compile(r"\{glue:(text|md)\}`([^`]+)`")
DOC = re.compile(r"\{doc\}`([^`<]+?)`")
# The package's extras a chapter needs, from what its cells use.
EXTRAS = {
    "framework": re.compile(
        r"^\s*(import|from)\s+(jax|keras|cnn\.keras_compat)\b", re.M
    ),
    "onnx": re.compile(r"^\s*(import|from)\s+onnx|\bexport_onnx\b", re.M),
}


def _executed_notebook(app, doc):
    """The notebook myst-nb wrote for chapter ``doc``, or None for a page that is not
    one."""
    path = Path(app.env.mystnb_config.output_folder) / f"{doc}.ipynb"
    is_notebook = app.env.metadata.get(doc, {}).get("kernelspec")
    return path if is_notebook and path.is_file() else None


def _other_doc(doc, target):
    """The name of the page ``target`` ("training", "../x/y.md") refers to from page
    ``doc``."""
    name = posixpath.normpath(posixpath.join(posixpath.dirname(doc), target))
    return posixpath.splitext(name)[0]


def _glued(glue_data, doc, reference, kind):
    """The text a ``{glue:text}`` or ``{glue:md}`` reference shows on the page."""
    if "::" in reference:  # another chapter's result: "training.md::key"
        other, reference = reference.split("::", 1)
        doc = _other_doc(doc, other)
    key, _, spec = reference.partition(":") if kind == "text" else (reference, "", "")
    data = glue_data(doc).get(key, {}).get("data", {})
    if kind == "md" and "text/markdown" in data:
        return data["text/markdown"]
    if "text/plain" not in data:
        raise KeyError(f"{doc}: no glued value {key!r}")
    return format_plain_text(data["text/plain"], spec) if spec else data["text/plain"]


def _include(app, doc, match):
    """A ``literalinclude`` of the page as the Python code block it shows."""
    options = {}
    for line in match.group(2).splitlines():
        name, _, value = line[1:].partition(":")
        options[name.strip()] = value.strip()
    source = (Path(app.srcdir) / doc).parent / match.group(1)
    code, _ = LiteralIncludeReader(str(source), options, app.config).read()
    where = Path(os.path.relpath(source, Path(app.srcdir).parent)).as_posix()
    label = options.get("pyobject") or options.get("start-at") or ""
    return f"```python\n# {where}: {label}\n{code.rstrip()}\n```"


def _readable(app, glue_data, doc, text):
    text = INCLUDE.sub(lambda m: _include(app, doc, m), text)
    text = GLUE.sub(lambda m: _glued(glue_data, doc, m.group(2), m.group(1)), text)
    return DOC.sub(lambda m: f"*{_title(app, doc, m.group(1))}*", text)


def _title(app, doc, target):
    title = app.env.titles.get(_other_doc(doc, target))
    return title.astext() if title is not None else target


def _first_cell(app, doc, notebook):
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    extras = [name for name, uses in EXTRAS.items() if uses.search(code)]
    extra = f'".[{",".join(extras)}]"' if extras else "."
    title = app.env.titles[doc].astext()
    book = app.config.html_title or app.config.project
    return nbformat.v4.new_markdown_cell(
        f"*{title}*, a chapter of *{book}*, as a notebook, with the outputs of the "
        "build that made the book's pages.\n\n"
        f"To run it in your own Jupyter, install the `cnn` package from the book's "
        f"repository (in a clone of it: `pip install -e {extra}`), then run the cells "
        "from the top. It reads no file of the book's folder: MNIST ships inside the "
        "package. The text is the page's MyST Markdown, with the package code the page "
        "shows and the numbers this build computed written in."
    )


def _with_outputs(app, notebook):
    """The notebook with its outputs: in cache mode, myst-nb writes the chapter without
    them, and they are in the execution cache (matched by the code cells)."""
    config = app.env.mystnb_config
    if config.execution_mode != "cache":
        return notebook  # executed in place ("force")
    from jupyter_cache import get_cache

    _, merged = get_cache(config.execution_cache_path).merge_match_into_notebook(
        notebook
    )
    return merged


def _write_notebooks(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    folder = Path(app.env.mystnb_config.output_folder)

    @functools.cache
    def glue_data(doc):  # each chapter's glued values, read once
        path = folder / f"{doc}.glue.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    target = Path(app.outdir) / "_sources"
    executed = [
        (doc, path)
        for doc in sorted(app.env.found_docs)
        if (path := _executed_notebook(app, doc))
    ]
    for doc, path in executed:
        notebook = _with_outputs(app, nbformat.read(path, as_version=4))
        for cell in notebook.cells:
            if cell.cell_type == "markdown":
                cell.source = _readable(app, glue_data, doc, cell.source)
        notebook.cells.insert(0, _first_cell(app, doc, notebook))
        nbformat.validate(notebook)
        out = target / f"{doc}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, out)
    logger.info(f"notebooks: {len(executed)} chapters written to {target}")


def _offer_notebook(app, pagename, templatename, context, doctree):
    # Before sphinx-book-theme builds its download menu (priority 501).
    if _executed_notebook(app, pagename):
        context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    app.connect("html-page-context", _offer_notebook, priority=500)
    app.connect("build-finished", _write_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
