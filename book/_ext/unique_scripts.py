"""Each script once per page.

sphinx-togglebutton and sphinx-thebe add inline scripts (``app.add_js_file(None,
body=...)``) after the HTML builder has started. Sphinx 7.4 then lists each of them
twice, once as added (file name None) and once copied from its registry before writing
(file name ""), and the two do not compare equal. The second copy of sphinx-thebe's
``const THEBE_JS_URL = ...`` is a JavaScript error in every page's console ("has
already been declared"). This drops the later copy of any script that a page already
has, counting None and "" as the same name.
"""


def _key(script):
    return (script.filename or "", script.priority, *sorted(script.attributes.items()))


def _unique(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # the builder's own list: it is restored after each page


def setup(app):
    # after the extensions that add page-specific scripts (default priority 500)
    app.connect("html-page-context", _unique, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
