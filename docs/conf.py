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
pygments_style = "sphinx"

# -- autodoc / autosummary / numpydoc ------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False  # a module's __all__ is its public API
autodoc_default_options = {"member-order": "groupwise"}
autodoc_typehints = "none"  # the numpydoc "Parameters" sections say the types
autodoc_inherit_docstrings = True
add_module_names = False
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
plot_include_source = True
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
    "show_memory": False,
    "download_all_examples": False,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "plot_gallery": "True",
}

# -- html ----------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"msr_sklearn {release}"
html_static_path = ["_static"]
html_css_files = ["msr.css"]
html_theme_options = {
    "description": "Meta-learning symmetries by reparameterization, the scikit-learn way",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
    "show_relbars": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
html_show_sourcelink = False

# Examples print numbers with torch: keep them deterministic and cheap on 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg",
                        category=UserWarning)
