"""Keep each script of a page once.

Sphinx 7.4 lists an inline script twice when an extension adds it after the builder started
(sphinx-thebe's and sphinx-togglebutton's configuration: once with file name ``None``, once
with ``''``), and a second ``const THEBE_JS_URL`` is a console error in every page.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", script) or "", tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
