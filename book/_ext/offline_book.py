"""A small Sphinx extension: the book's pages carry no script that points outside the book.

jupyter-book 1.x always loads ``sphinx_thebe``, which adds its inline ``THEBE_JS_URL`` script (a CDN
address) twice per page - a console error ("Identifier 'THEBE_JS_URL' has already been declared") -
and its loader script. The book has no launch buttons, so both are dropped from every page.
"""

from __future__ import annotations

__all__ = ["setup"]


def _drop_thebe(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    kept = []
    for js in scripts:
        body = js.attributes.get("body", "") if hasattr(js, "attributes") else ""
        name = str(js)
        if "THEBE_JS_URL" in body or "sphinx-thebe.js" in name or "unpkg.com" in name:
            continue
        kept.append(js)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
