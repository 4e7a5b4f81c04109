"""Fast checks of the documentation that do not build it.

* Every public name has a numpydoc docstring with a ``Parameters`` section that
  documents each argument of its signature, and an ``Examples`` section (the examples
  themselves run as doctests, through ``--doctest-modules``).
* Every public module is in the API reference, and a module that re-exports names from
  a private module declares ``__all__`` (the API pages list a module's ``__all__``).
* Every gallery script compiles and follows the gallery's conventions, without running
  it (the docs build runs them: ``python -m sphinx -W --keep-going -b html docs
  docs/_build/html``).

The docstrings are parsed here with a small numpydoc-style reader, so these tests need
nothing beyond the test extra.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"

#: the modules whose public names are checked (the user-facing API)
CHECKED_MODULES = ("msr_sklearn", "msr_sklearn.sharing", "msr_sklearn.models",
                   "msr_sklearn.datasets",
                   "msr_sklearn.groups", "msr_sklearn.inspection", "msr_sklearn.data.streams",
                   "msr_sklearn.engine", "msr_sklearn.data.batch", "msr_sklearn.data.tasks",
                   "msr_sklearn.training", "msr_sklearn.training.callbacks",
                   "msr_sklearn.training.checkpoints", "msr_sklearn.persistence")

#: modules documented through the top-level namespace (or not API at all)
NOT_IN_API_REFERENCE = {"msr_sklearn.learner", "msr_sklearn.estimators",
                        "msr_sklearn.symmetry", "msr_sklearn.demo", "msr_sklearn.architecture"}


# ----------------------------------------------------------------------------- helpers
def public_names(module_name):
    """``__all__``, or else the public functions and classes defined in the package."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name, obj in vars(module).items()
                 if not name.startswith("_")
                 and (inspect.isfunction(obj) or inspect.isclass(obj))
                 and getattr(obj, "__module__", "").startswith("msr_sklearn")]
    return [name for name in sorted(names) if callable(getattr(module, name))]


def all_public():
    return [f"{module}.{name}" for module in CHECKED_MODULES for name in public_names(module)]


def resolve(dotted):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


_UNDERLINE = re.compile(r"^-{3,}$")


def docstring_sections(doc):
    """``{section title: [lines]}`` of a numpydoc docstring (``"Summary"`` first)."""
    lines = inspect.cleandoc(doc).splitlines()
    sections, current = {"Summary": []}, "Summary"
    i = 0
    while i < len(lines):
        line = lines[i]
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.strip() and not line.startswith(" ") and _UNDERLINE.match(following):
            current = line.strip()
            sections[current] = []
            i += 2
            continue
        sections[current].append(line)
        i += 1
    return sections


def documented_parameters(lines):
    """Names documented in a Parameters section (``a, b : int`` documents both)."""
    names = set()
    for line in lines:
        if not line.strip() or line.startswith(" "):
            continue
        head = line.split(" : ")[0].strip()
        names.update(n.strip().lstrip("*") for n in head.split(","))
    return names


def signature_parameters(obj):
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [p.name for p in signature.parameters.values()
            if p.name not in ("self", "cls") and not p.name.startswith("_")
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def docstring_gaps(obj):
    """What a public object's docstring lacks: a subset of the names below, with details."""
    doc = inspect.getdoc(obj) if not inspect.isclass(obj) else obj.__doc__
    if not doc or not doc.strip():
        return {"docstring": "no docstring"}
    sections = docstring_sections(doc)
    gaps = {}
    if not "".join(sections["Summary"]).strip():
        gaps["summary"] = "the docstring does not open with a summary line"
    wanted = signature_parameters(obj)
    missing = [p for p in wanted if p not in documented_parameters(sections.get("Parameters",
                                                                                 []))]
    if missing:
        gaps["parameters"] = f"arguments without a Parameters entry: {missing}"
    if not "".join(sections.get("Examples", [])).strip():
        gaps["examples"] = "no Examples section"
    elif ">>>" not in "\n".join(sections["Examples"]):
        gaps["examples"] = "the Examples section has no runnable (>>>) example"
    return gaps


# ------------------------------------------------------------------------ docstrings
def test_public_api_is_found():
    names = all_public()
    assert "msr_sklearn.MetaSymmetryLearner" in names
    assert "msr_sklearn.sharing.resolve_policy" in names and "msr_sklearn.models.MLP" in names
    assert "msr_sklearn.datasets.make_translation_tasks" in names


@pytest.mark.parametrize("name", all_public())
def test_public_docstring(name):
    """A numpydoc docstring with Parameters (for every argument) and runnable Examples."""
    gaps = docstring_gaps(resolve(name))
    assert not gaps, f"{name}: " + "; ".join(gaps.values())


def test_docstring_reader():
    def documented(a, b, *args, c=1, **kwargs):
        """Do it.

        Parameters
        ----------
        a, b : int
            Numbers.
        c : int, default=1

        Examples
        --------
        >>> documented(1, 2)
        """

    def partial(a, c=1):
        """Do it.

        Parameters
        ----------
        a : int

        Examples
        --------
        Nothing to run.
        """

    def bare(x):
        """Only a summary."""

    assert docstring_gaps(documented) == {}
    gaps = docstring_gaps(partial)
    assert "['c']" in gaps["parameters"] and "runnable" in gaps["examples"]
    assert set(docstring_gaps(bare)) == {"parameters", "examples"}


# --------------------------------------------------------------------- API reference
def _api_modules():
    text = (DOCS / "api.rst").read_text()
    return set(re.findall(r"^\s+(msr_sklearn(?:\.\w+)*)\s*$", text, flags=re.M))


def test_every_public_module_is_in_the_api_reference():
    package = ROOT / "msr_sklearn"
    modules = {"msr_sklearn"}
    for path in package.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(p.startswith("_") for p in parts):
            if path.name != "__init__.py" or any(p.startswith("_") for p in parts[:-1]):
                continue
            parts = parts[:-1]
        modules.add(".".join(parts))
    # submodules of a documented package (msr_sklearn.nn.layers) are covered by it
    listed = _api_modules()
    missing = sorted(m for m in modules - listed - NOT_IN_API_REFERENCE
                     if not any(m.startswith(p + ".") for p in listed if p != "msr_sklearn"))
    assert not missing, f"add these modules to docs/api.rst: {missing}"
    for module in listed:
        importlib.import_module(module)


@pytest.mark.parametrize("module_name", CHECKED_MODULES)
def test_reexports_are_declared_in_all(module_name):
    """The API page of a module without ``__all__`` lists only what it defines itself."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return
    reexported = sorted(
        name for name, obj in vars(module).items()
        if not name.startswith("_") and callable(obj)
        and getattr(obj, "__module__", "").startswith("msr_sklearn.")
        and obj.__module__ != module_name
        and any(p.startswith("_") for p in obj.__module__.split(".")))
    assert not reexported, (
        f"{module_name} re-exports {reexported} from private modules; declare __all__ in "
        f"{module_name} so the API reference lists them")


# ------------------------------------------------------------------------- gallery
EXAMPLE_SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def test_gallery_exists():
    assert (EXAMPLES / "README.txt").is_file() or (EXAMPLES / "README.rst").is_file()
    assert any(p.name.startswith("plot_") for p in EXAMPLE_SCRIPTS)


@pytest.mark.parametrize("path", EXAMPLE_SCRIPTS, ids=lambda p: p.name)
def test_example_compiles(path):
    source = path.read_text(encoding="utf-8")
    compile(source, str(path), "exec")


@pytest.mark.parametrize("path", EXAMPLE_SCRIPTS, ids=lambda p: p.name)
def test_example_follows_gallery_conventions(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    doc = ast.get_docstring(tree, clean=False)
    assert doc, f"{path.name}: a gallery script opens with a docstring (its title and intro)"
    lines = [line.rstrip() for line in doc.strip("\n").splitlines()]
    # "===\nTitle\n===" or "Title\n==="; the rule at least as long as the title
    if set(lines[0]) == {"="}:
        title, rule = lines[1], lines[2]
        assert lines[0] == rule, f"{path.name}: the title's over- and underline differ"
    else:
        title, rule = lines[0], lines[1]
    assert set(rule) == {"="} and len(rule) >= len(title.strip()), \
        f"{path.name}: the title {title.strip()!r} needs an '=' underline at least as long"
    if re.search(r"^\s*import torch\b|^\s*from torch\b", source, flags=re.M):
        assert "torch.set_num_threads(1)" in source, \
            f"{path.name}: call torch.set_num_threads(1) (small ops; keeps the build fast)"


def test_docs_sources_compile():
    for path in [DOCS / "conf.py", *sorted((DOCS / "sphinxext").glob("*.py"))]:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
