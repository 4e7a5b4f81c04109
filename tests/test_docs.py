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


# ------------------------------------------------------------------- code in the pages
# Every Python code block of these pages runs, in order, in one namespace per page (a
# page reads like a notebook), in a temporary directory:
#
# * reStructuredText: ``.. code-block:: python`` blocks are executed, and ``>>>``
#   blocks run as doctests (ELLIPSIS and NORMALIZE_WHITESPACE on);
# * Markdown (README, MyST pages): fenced ```` ```python ```` blocks are executed;
# * a block marked ``:class: illustrative`` (``.. code-block:: python`` with that
#   option, or MyST's ```` ```{code-block} python ```` with it) is a sketch that needs
#   what a test cannot have (a cluster, several processes, your own data): it is only
#   compiled, and the page shows it with an "illustrative" label (docs/_static/msr.css).
#
# The user guide's figures (``.. plot::``) run in the docs build, not here.
README = ROOT / "README.md"
DOC_PAGES = [README, DOCS / "index.rst", DOCS / "install.rst",
             *sorted((DOCS / "user_guide").glob("*.rst")),
             DOCS / "scaling.md", DOCS / "design.md"]
#: the widest line a code block may have: 88 characters fit the pages at 1,400 px
MAX_CODE_LINE = 88
#: pages whose code does not run as written yet, and why. Strict: once a page runs, its
#: test fails until it leaves this list
NOT_RUNNABLE_YET = {}

_RST_DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. code-block:: *(?P<lang>\S+) *$")
_MD_FENCE = re.compile(r"^```(?:\{code-block\} *)?(?P<lang>[\w-]*) *$")


class CodeBlock:
    """One code block of a page: its language, source, first line and whether it runs."""

    def __init__(self, lang, source, line, illustrative=False, doctest=False):
        self.lang, self.source, self.line = lang, source, line
        self.illustrative, self.doctest = illustrative, doctest

    @property
    def python(self):
        return self.doctest or self.lang in ("python", "py", "python3")

    def __repr__(self):
        kind = "doctest" if self.doctest else self.lang
        return f"CodeBlock({kind}, line {self.line}, illustrative={self.illustrative})"


def _indent(line):
    return len(line) - len(line.lstrip())


def rst_code_blocks(text):
    """The ``code-block`` directives and ``>>>`` doctest blocks of a reST page, in order."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        match = _RST_DIRECTIVE.match(lines[i])
        if match:
            indent, options = len(match["indent"]), {}
            i += 1
            while i < len(lines) and lines[i].strip().startswith(":") and \
                    _indent(lines[i]) > indent:
                key, _, value = lines[i].strip()[1:].partition(":")
                options[key] = value.strip()
                i += 1
            start, body = i, []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
                body.append(lines[i])
                i += 1
            first = start + next((k for k, b in enumerate(body) if b.strip()), 0)
            blocks.append(CodeBlock(match["lang"], inspect.cleandoc("\n".join(body)),
                                    first + 1, "illustrative" in options.get("class", "")))
            continue
        if lines[i].lstrip().startswith(">>>"):
            start, body = i, []
            while i < len(lines) and lines[i].strip():
                body.append(lines[i])
                i += 1
            blocks.append(CodeBlock("pycon", inspect.cleandoc("\n".join(body)), start + 1,
                                    doctest=True))
            continue
        i += 1
    return blocks


def md_code_blocks(text):
    """The fenced code blocks of a Markdown (or MyST) page, in order."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        match = _MD_FENCE.match(lines[i])
        if not match or not match["lang"]:
            i += 1
            continue
        options = {}
        i += 1
        while i < len(lines) and lines[i].startswith(":"):
            key, _, value = lines[i][1:].partition(":")
            options[key] = value.strip()
            i += 1
        start, body = i, []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        source = "\n".join(body)
        doctest_block = source.lstrip().startswith(">>>")
        blocks.append(CodeBlock(match["lang"], source, start + 1,
                                "illustrative" in options.get("class", ""), doctest_block))
    return blocks


def code_blocks(path):
    text = path.read_text(encoding="utf-8")
    return rst_code_blocks(text) if path.suffix == ".rst" else md_code_blocks(text)


def run_code_blocks(path, namespace):
    """Run a page's Python blocks in ``namespace``, in order; a failure names its line."""
    import doctest

    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    name = path.relative_to(ROOT)
    for block in code_blocks(path):
        if not block.python:
            continue
        if block.doctest:
            test = doctest.DocTestParser().get_doctest(block.source, namespace,
                                                      f"{name}:{block.line}", str(path),
                                                      block.line - 1)
            report = []
            runner = doctest.DocTestRunner(optionflags=flags)
            runner.run(test, out=report.append, clear_globs=False)
            namespace.update(test.globs)
            assert not runner.failures, "".join(report)
            continue
        # padded so that a traceback gives the line in the page
        code = compile("\n" * (block.line - 1) + block.source, str(name), "exec")
        if not block.illustrative:
            exec(code, namespace)


def test_code_block_reader():
    rst = inspect.cleandoc("""
        Text ``x``.

        .. code-block:: python

           a = 1

              b = 2

        .. code-block:: python
           :class: illustrative

           cluster()

        >>> a + 1
        2

        .. code-block:: bash

           pip install x
        """)
    blocks = rst_code_blocks(rst)
    assert [(b.lang, b.line, b.illustrative, b.doctest) for b in blocks] == [
        ("python", 5, False, False), ("python", 12, True, False),
        ("pycon", 14, False, True), ("bash", 19, False, False)]
    assert blocks[0].source == "a = 1\n\n   b = 2"
    md = "Text\n\n```python\nx = 1\n```\n\n```{code-block} python\n:class: illustrative\n" \
         "\nrun()\n```\n\n```bash\nls\n```\n"
    blocks = md_code_blocks(md)
    assert [(b.lang, b.line, b.illustrative) for b in blocks] == [
        ("python", 4, False), ("python", 9, True), ("bash", 14, False)]


#: the benchmark write-ups: their code (commands, long runs) is not run here, but fits
WRITE_UPS = [DOCS / name for name in ("aug_digits.md", "convergence.md", "real_images.md",
                                      "reproduction.md")]


@pytest.mark.parametrize("path", DOC_PAGES + WRITE_UPS,
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_fit_the_page(path):
    """No code block scrolls sideways at 1,400 px: every line within MAX_CODE_LINE."""
    wide = [(block.line + k, len(line)) for block in code_blocks(path)
            for k, line in enumerate(block.source.splitlines()) if len(line) > MAX_CODE_LINE]
    assert not wide, f"{path.name}: lines (page line, length) longer than {MAX_CODE_LINE}: {wide}"


@pytest.mark.parametrize("path", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(path, tmp_path, monkeypatch, request):
    """Every Python block of the page runs as written (illustrative ones compile)."""
    if path.name in NOT_RUNNABLE_YET:
        request.applymarker(pytest.mark.xfail(reason=NOT_RUNNABLE_YET[path.name],
                                              strict=True))
    import matplotlib

    matplotlib.use("Agg")
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    monkeypatch.chdir(tmp_path)
    try:
        run_code_blocks(path, {"__name__": "__docs__"})
    finally:
        torch.set_num_threads(threads)
