"""Serve MathJax from the book itself when its copy is there, else from MathJax's CDN.

`make book` fetches MathJax from the npm registry into book/_mathjax/ (not committed),
so the built book renders its equations offline. A plain `jupyter-book build book`
without that copy falls back to Sphinx's default MathJax address, instead of pointing at
a file that is missing (which left every equation as raw TeX, with a warning about
`html_extra_path`).
"""

from pathlib import Path

LOCAL = Path("_mathjax")  # in the book's source folder; copied to the root of the HTML


def _choose(app, config):
    if (Path(app.srcdir) / LOCAL / "mathjax" / "tex-chtml.js").is_file():
        config.html_extra_path = [*config.html_extra_path, str(LOCAL)]
        # Sphinx takes a path relative to _static/.
        config.mathjax_path = "../mathjax/tex-chtml.js"


def setup(app):
    app.connect("config-inited", _choose)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
