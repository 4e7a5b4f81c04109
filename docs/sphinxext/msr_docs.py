"""Small Sphinx helpers for the msr_sklearn documentation.

* :class:`ExampleOrder` orders the gallery: the quickstart first, then the stories in
  reading order; any other example follows, by file name.
* :func:`reset_torch` runs before every gallery example: one CPU thread (the small
  ops of the examples run fastest so) and a fixed torch seed.
* Optional pages: the design note and the benchmark write-ups (Markdown files in
  ``docs/``) are written by others and come and go. The ``.. optional-pages::`` marker
  in ``index.rst`` becomes a toctree of every ``docs/*.md`` that exists (the known ones
  first), so the build stays free of warnings either way.
* The header of the site (pydata-sphinx-theme): :func:`header_sections` turns the
  toctrees of ``index.rst`` into the links of ``_templates/msr-navbar-nav.html``; the
  write-ups are one menu there, and their own left sidebar
  (``_templates/msr-section-nav.html``) lists them.
"""

from __future__ import annotations

import re
from pathlib import Path

#: gallery scripts in reading order (file names); others follow alphabetically
EXAMPLE_ORDER = (
    "plot_quickstart.py",
    "plot_meta_learning_dynamics.py",
    "plot_save_load_symmetry.py",
    "plot_custom_module.py",
    "plot_model_selection.py",
    "plot_long_format.py",
    "plot_symmetry_report.py",
    "plot_soft_symmetry.py",
    "plot_aug_digits.py",
    "plot_glyph_fewshot.py",
)

#: write-ups by others, listed first in this order when present; any other
#: ``docs/*.md`` follows, by name (titles come from the documents themselves)
OPTIONAL_PAGES = ("design", "reproduction", "convergence", "aug_digits", "real_images")

_MARKER = ".. optional-pages::"


class ExampleOrder:
    """Sort key for sphinx-gallery's ``within_subsection_order``."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        name = Path(filename).name
        if name in EXAMPLE_ORDER:
            return (0, EXAMPLE_ORDER.index(name), name)
        return (1, 0, name)

    def __repr__(self):  # sphinx-gallery hashes the config through repr
        return "ExampleOrder()"


def reset_torch(gallery_conf, fname):
    """Before every example: one torch thread and a fixed seed."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)


def existing_optional_pages(srcdir):
    """The Markdown pages in ``srcdir``, as docnames: the known ones first."""
    present = sorted(p.stem for p in Path(srcdir).glob("*.md"))
    return ([d for d in OPTIONAL_PAGES if d in present]
            + [d for d in present if d not in OPTIONAL_PAGES])


def _expand_optional_pages(app, docname, source):
    if _MARKER not in source[0]:
        return
    pages = existing_optional_pages(app.srcdir)
    block = ""
    if pages:
        block = (".. toctree::\n   :maxdepth: 1\n   :caption: Design and benchmarks\n\n"
                 + "".join(f"   {doc}\n" for doc in pages))
    source[0] = source[0].replace(_MARKER, block)


#: captioned toctrees of ``index.rst`` that are one menu of the header (caption: label)
HEADER_MENUS = {"Design and benchmarks": "Write-ups"}


def header_sections(env, root_doc, pagename, pathto):
    """The top-level sections of the site, as the header template renders them.

    One entry per page of the root document's toctrees, in order, except that the
    pages of a toctree named in :data:`HEADER_MENUS` come as one entry with
    ``children``. Each entry is a dict: ``title``, ``href``, ``active`` (the reader is
    on that page or below it), ``current`` (on that very page) and ``children``.
    """
    from sphinx import addnodes

    parents = {}
    for parent, children in env.toctree_includes.items():
        for child in children:
            parents.setdefault(child, parent)
    trail = [pagename]  # the page and its ancestors, up to the root
    while trail[-1] in parents and parents[trail[-1]] not in trail:
        trail.append(parents[trail[-1]])

    def link(title, page):
        if title is None:
            title = env.titles[page].astext() if page in env.titles else page
        return {"title": title, "href": pathto(page), "current": page == pagename,
                "active": page in trail and page != root_doc, "children": []}

    sections = []
    root_toc = env.tocs.get(root_doc)
    for toc in root_toc.findall(addnodes.toctree) if root_toc is not None else ():
        links = [link(title, page) for title, page in toc["entries"]
                 if page != "self" and page in env.found_docs]
        label = HEADER_MENUS.get(toc.get("caption"))
        if label and links:
            sections.append({"title": label, "href": None, "current": False,
                             "active": any(entry["active"] for entry in links),
                             "children": links})
        else:
            sections.extend(links)
    return sections


def _add_header_sections(app, pagename, templatename, context, doctree):
    if "pathto" in context:
        context["msr_header_sections"] = header_sections(
            app.env, app.config.root_doc, pagename, context["pathto"])


def _always_reread_index(app, env, added, changed, removed):
    # the optional pages may appear between two builds while index.rst is unchanged
    return ["index"] if "index" in env.found_docs else []


def _patch_autosummary_summaries():
    """Never cut an autosummary one-line summary inside an inline literal.

    Sphinx takes the text up to the first ``". "`` as the summary, so a docstring
    opening with ``U = F_1 ⊗ ... ⊗ F_m`` would be cut inside the literal and the
    table would render a broken line (a docutils warning). Extend such a summary to
    the next sentence end outside any literal.
    """
    from sphinx.ext import autosummary

    original = autosummary.extract_summary
    if getattr(original, "_msr_patched", False):
        return

    def extract_summary(doc, settings):
        summary = original(doc, settings)
        if summary.count("``") % 2 == 0:
            return summary
        stanza = []
        for line in doc:
            if not line.strip():
                if stanza:
                    break
                continue
            stanza.append(line.strip())
        sentences = autosummary.periods_re.split(" ".join(stanza))
        for i in range(len(sentences)):
            candidate = ". ".join(sentences[: i + 1]).rstrip(".") + "."
            if candidate.count("``") % 2 == 0:
                return candidate
        return " ".join(stanza)

    extract_summary._msr_patched = True
    autosummary.extract_summary = extract_summary


#: labels that inherited scikit-learn docstrings (``score``, ``set_*_request``...) refer
#: to; without network access there is no intersphinx inventory, so they link here
SKLEARN_URL = "https://scikit-learn.org/stable/"
SKLEARN_LABELS = {
    "accuracy_score": "modules/model_evaluation.html#accuracy-score",
    "r2_score": "modules/model_evaluation.html#r2-score",
    "metadata_routing": "metadata_routing.html",
    "user_guide": "user_guide.html",
    "glossary": "glossary.html",
}


def _resolve_sklearn_reference(app, env, node, contnode):
    """Point references of scikit-learn's own docstrings at scikit-learn's site."""
    from docutils import nodes

    if node.get("refdomain") != "std" or node.get("reftype") not in ("ref", "term"):
        return None
    target = node.get("reftarget", "")
    if node["reftype"] == "ref" and target in SKLEARN_LABELS:
        uri = SKLEARN_URL + SKLEARN_LABELS[target]
    elif node["reftype"] == "term" and "sklearn" in str(node.source or ""):
        uri = SKLEARN_URL + "glossary.html#term-" + target.lower().replace(" ", "-")
    else:
        return None
    reference = nodes.reference("", "", internal=False, refuri=uri)
    reference += contnode
    return reference


#: a parameter line as numpydoc renders it: ``**name** : type`` (or an :obj: link)
_PARAM_LINE = re.compile(r"^(\s+(?:\*\*[^*]+\*\*|:obj:`[^`]+`) : )(.+)$")
#: a bare identifier ending in "_" (``n_features_in_``), which reST reads as a link
_UNDERSCORE_NAME = re.compile(r"(?<![`\w])([A-Za-z_]\w*_)(?![\w`])")


def _literal_underscore_names_in_types(app, what, name, obj, options, lines):
    """``ndarray of shape (n_features_in_,)``: show ``n_features_in_`` as a literal.

    In a numpydoc type a fitted-attribute name such as ``n_features_in_`` would be an
    unknown reST hyperlink target (an error); it is code, so render it as code.
    """
    for i, line in enumerate(lines):
        match = _PARAM_LINE.match(line)
        if match and "`" not in match.group(2):
            lines[i] = match.group(1) + _UNDERSCORE_NAME.sub(r"``\1``", match.group(2))


def setup(app):
    _patch_autosummary_summaries()
    # after numpydoc (priority 500) has turned the sections into reST
    app.connect("autodoc-process-docstring", _literal_underscore_names_in_types,
                priority=600)
    # after Sphinx's own resolvers: local labels (this site's) win
    app.connect("missing-reference", _resolve_sklearn_reference, priority=900)
    app.connect("source-read", _expand_optional_pages)
    app.connect("env-get-outdated", _always_reread_index)
    # before the theme renders its templates (its own handlers run at priority 500)
    app.connect("html-page-context", _add_header_sections, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
