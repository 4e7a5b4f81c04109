"""Sphinx configuration of the msr_sklearn documentation.

Build (the gallery in ``../examples`` is executed, warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Generated files: ``docs/_build`` (the site), ``docs/auto_examples`` (the executed
gallery) and ``docs/generated`` (API stubs written by autosummary). None is committed.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: every figure of the build is drawn off-screen

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "sphinxext"))

import msr_sklearn  # noqa: E402  (after sys.path / backend set-up)
from msr_docs import existing_optional_pages  # noqa: E402  (docs/sphinxext)

# -- project -------------------------------------------------------------------------
project = "msr_sklearn"
author = "msr_sklearn developers"
copyright = "msr_sklearn developers, BSD-3-Clause"  # noqa: A001  (Sphinx's name)
release = msr_sklearn.__version__
version = ".".join(release.split(".")[:2])

# -- extensions ----------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    # MathJax 3 copied into _static/mathjax, mathjax_path pointed at it (no CDN)
    "sphinx-mathjax-offline",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
    "myst_parser",
    "msr_docs",  # docs/sphinxext/msr_docs.py: optional pages, API coverage check
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints",
                    "auto_examples/*.md5", "sphinxext"]
default_role = "literal"

# -- autodoc / autosummary / numpydoc ------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False  # a module's __all__ is its public API
autodoc_default_options = {"member-order": "groupwise"}
autodoc_typehints = "none"  # the numpydoc "Parameters" sections say the types
autodoc_inherit_docstrings = True
add_module_names = False
toc_object_entries_show_parents = "hide"  # "fit()" in a page's table of contents
numpydoc_show_class_members = True
numpydoc_class_members_toctree = False
numpydoc_show_inherited_class_members = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- myst (markdown benchmark write-ups) ---------------------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # write-ups may start at "##" (no document title level)

# -- matplotlib plot directive (the user guide's pictures) ---------------------------
# the figures of the user guide show their picture, not the code that draws it (a
# directive that should show its code says ``:include-source: true``)
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.dpi": 110, "savefig.bbox": "tight"}
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\n"

# -- sphinx-gallery ------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",  # every plot_*.py is executed
    "ignore_pattern": r"__init__\.py|/_",
    # string names (not callables) so that Sphinx can pickle the configuration
    "within_subsection_order": "msr_docs.ExampleOrder",
    "reset_modules": ("matplotlib", "msr_docs.reset_torch"),
    "doc_module": ("msr_sklearn",),
    "backreferences_dir": "generated/backreferences",
    "remove_config_comments": True,
    "min_reported_time": 1,
    # no sg_execution_times pages: they load jQuery and DataTables from CDNs (each
    # example page still says its running time)
    "write_computation_times": False,
    "show_memory": False,
    "download_all_examples": False,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "plot_gallery": "True",
}

# -- html ----------------------------------------------------------------------------
# pydata-sphinx-theme: scikit-learn's own theme. Everything it loads (CSS, fonts, icons,
# scripts) ships with it, and MathJax ships with sphinx-mathjax-offline: the built site
# works without a network connection. No "edit this page", no GitHub icon links.
html_theme = "pydata_sphinx_theme"
html_title = f"msr_sklearn {release}"
html_short_title = "msr_sklearn"
html_static_path = ["_static"]
html_css_files = ["msr.css"]
html_show_sourcelink = False
html_context = {"default_mode": "auto"}  # light or dark, as the reader's system says
html_theme_options = {
    "logo": {"text": "msr_sklearn"},
    # the header: the sections of the root toctree, the write-ups as one menu
    # (docs/_templates/msr-navbar-nav.html, fed by docs/sphinxext/msr_docs.py)
    "navbar_start": ["navbar-logo", "msr-version"],
    "navbar_center": ["msr-navbar-nav"],
    "navbar_end": ["theme-switcher"],
    "navbar_persistent": ["search-button"],
    "navbar_align": "left",
    "icon_links": [],
    "use_edit_page_button": False,
    "show_toc_level": 2,
    "navigation_depth": 3,
    "show_prev_next": True,
    "secondary_sidebar_items": {
        "**": ["page-toc", "sg_download_links"],
        "index": [],
        "search": [],
    },
    "footer_start": ["copyright"],
    "footer_center": [],
    "footer_end": [],
}
# The left sidebar lists the current section; pages without one (the home page, the
# installation, the glossary...) get the full width. A write-up lists its siblings.
_WRITEUPS = existing_optional_pages(HERE)
html_sidebars = {
    "**": ["sidebar-nav-bs"],
    **{doc: [] for doc in ("index", "install", "glossary", "changelog", "search",
                           "genindex")},
    **{doc: ["msr-section-nav"] for doc in _WRITEUPS},
}

# Examples print numbers with torch: keep them deterministic and cheap on 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg",
                        category=UserWarning)
