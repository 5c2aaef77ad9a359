"""The page where the reader draws (book/draw.md): ONNX Runtime Web and the page's own
script, on that page only.

`make book` fetches ONNX Runtime Web from the npm registry into book/_ort/ort/ (not
committed); it is then served from the book itself, `_static/ort/`, so the page works
offline. Without that copy (a plain `jupyter-book build book`), the page loads it from
the jsDelivr CDN instead. `draw.js` (book/_draw/, kept out of _static/, whose scripts
Jupyter Book adds to every page) reads the drawing, prepares it as `cnn.prepare_digit`
does, and runs the network with ONNX Runtime.
"""

import json
from pathlib import Path

ORT_VERSION = "1.30.0"  # the Makefile's ORT_VERSION
LOCAL = Path("_ort")  # in the book's source folder; its ort/ goes to _static/ort/
SCRIPT = Path("_draw")  # draw.js, to _static/draw.js
CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_VERSION}/dist/"
PAGE = "draw"


def _local(app):
    return (Path(app.srcdir) / LOCAL / "ort" / "ort.wasm.min.js").is_file()


def _choose(app, config):
    extra = [str(SCRIPT)] + ([str(LOCAL)] if _local(app) else [])
    config.html_static_path = [*config.html_static_path, *extra]


def _scripts(app, pagename, templatename, context, doctree):
    if pagename != PAGE:
        return
    local = _local(app)
    # Where ort.wasm.min.js finds its WebAssembly: an address relative to the page.
    base = "_static/ort/" if local else CDN
    app.add_js_file(None, body=f"window.CNN_ORT_BASE = {json.dumps(base)};")
    app.add_js_file("ort/ort.wasm.min.js" if local else CDN + "ort.wasm.min.js")
    app.add_js_file("draw.js")


def setup(app):
    app.connect("config-inited", _choose)
    app.connect("html-page-context", _scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
