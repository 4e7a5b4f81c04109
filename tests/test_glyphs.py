"""Aug-Glyphs: rendering, cache, splits and the episode contract, on a small rendered set."""

import sys

import numpy as np
import pytest

from msr_sklearn.datasets import _cache
from msr_sklearn.datasets import glyphs as glyphs_module
from msr_sklearn.datasets import load_aug_glyphs_tasks, load_glyphs
from msr_sklearn.groups import grid_transforms, transform_grid

SMALL = 8   # candidate letters per script: ~50 classes, rendered in about a second


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("glyph_home")
    load_glyphs(max_classes_per_script=SMALL, data_home=path)
    return path


def _tasks(home, *args, **kwargs):
    return load_aug_glyphs_tasks(*args, max_classes_per_script=SMALL, data_home=home,
                                 **kwargs)


# ----------------------------------------------------------------------- the set
def test_rendered_set(home):
    g = load_glyphs(max_classes_per_script=SMALL, data_home=home)
    n = len(g.codepoint)
    assert g.images.shape == (n, 20, 28, 28) and g.images.dtype == np.uint8
    assert g.font.shape == (n, 20)
    # every class is drawn by at least 10 distinct fonts, and no image is blank
    assert min(len(set(row)) for row in g.font) >= 10
    assert (g.images.reshape(n * 20, -1).max(axis=1) > 100).all()
    # ink stays inside the frame: the outermost ring of pixels is nearly empty
    border = np.concatenate([g.images[..., 0, :], g.images[..., -1, :],
                             g.images[..., :, 0], g.images[..., :, -1]], axis=-1)
    assert border.mean() < 1.0
    assert set(g.split) == {"train", "val", "test"}
    assert "matplotlib" in g.provenance and "Pillow" in g.provenance


def test_splits_are_class_disjoint_and_by_script(home):
    g = load_glyphs(max_classes_per_script=SMALL, data_home=home)
    for split, scripts in glyphs_module.AUG_GLYPHS_SPLITS.items():
        assert set(g.script[g.split == split]) <= set(scripts)
    parts = {s: set(g.character[g.split == s]) for s in ("train", "val", "test")}
    assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"]
    assert not parts["val"] & parts["test"]
    _, info = _tasks(home, 40, split="test", return_info=True, random_state=0)
    assert set(info.character) <= parts["test"]


def test_jitter_has_no_rotation_or_flip():
    """The jitter's linear part keeps orientation and turns by a few degrees at most.

    A drawing of four blobs is jittered; the affine map fitted from the blobs'
    centres before to after has a positive determinant (no flip) and the rotation of
    its polar decomposition stays far below 90°.
    """
    glyph = np.zeros((80, 80), dtype=np.uint8)
    centres = np.array([(10, 10), (10, 60), (45, 20), (70, 70)])   # (row, col)
    for r, c in centres:
        glyph[r - 4:r + 5, c - 4:c + 5] = 255
    rng = np.random.default_rng(0)
    angles = []
    for _ in range(200):
        image = glyphs_module._place(glyph, 28, rng)
        found = []
        for r, c in centres:   # each blob lands within a few pixels of its clean spot
            r0, c0 = int(round((r - 39.5) * 0.275 + 14)), int(round((c - 39.5) * 0.275 + 14))
            window = image[max(r0 - 5, 0):r0 + 6, max(c0 - 5, 0):c0 + 6]
            rows, cols = np.indices(window.shape)
            found.append((np.sum(rows * window) / window.sum() + max(r0 - 5, 0),
                          np.sum(cols * window) / window.sum() + max(c0 - 5, 0)))
        source = np.c_[centres - centres.mean(0), np.ones(4)]
        linear = np.linalg.lstsq(source, np.array(found), rcond=None)[0][:2].T
        u, _, vt = np.linalg.svd(linear)
        rotation = u @ vt
        assert np.linalg.det(linear) > 0
        angles.append(np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0])))
    # a slant of at most 0.2 turns the polar factor by about atan(0.1) = 5.7°, the
    # elastic field by a little more: 8.9° at most measured here
    assert max(np.abs(angles)) < 12 and np.std(angles) > 1


def _clean_renders(letters):
    """The centred drawing of every letter in every font that has it."""
    fonts = glyphs_module._font_paths()
    sized = glyphs_module._sized_fonts(fonts, 28)
    drawers = glyphs_module._candidates(fonts, None)
    clean = {}
    for char in letters:
        for f in drawers[ord(char)]:
            clean[ord(char), f] = glyphs_module._place(glyphs_module._draw(sized[f], char), 28)
    return {ord(c): drawers[ord(c)] for c in letters}, clean, len(fonts)


def test_letters_the_augmentation_confuses_are_merged():
    letters = "bdpqnuAΑÈÉaeo"
    drawers, clean, n_fonts = _clean_renders(letters)
    kept, merged = glyphs_module._merge_confusable(sorted(drawers), drawers, clean, n_fonts)
    kept = {chr(c) for c in kept}
    merged = {chr(a): (chr(b), reason) for a, b, reason in merged}
    # b, d, p, q are one letter up to D4, as are n and u; Greek Alpha is Latin A
    assert {"b", "n", "A"} <= kept and not {"d", "p", "q", "u", "Α"} & kept
    assert merged["d"] == ("b", "d4") and merged["u"] == ("n", "d4")
    assert merged["Α"] == ("A", "same")
    # letters that differ only by an accent, or are just similar, stay apart
    assert {"È", "É", "a", "e", "o"} <= kept


# ------------------------------------------------------------------- the cache
def test_cache_is_written_once_and_reused(home, monkeypatch):
    files = sorted(p.name for p in (home / "msr_sklearn").iterdir())
    assert files == [f"aug_glyphs_v{glyphs_module._VERSION}_28px_max{SMALL}.npz"]

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(glyphs_module, "_render", no_rendering)
    _cache._read.cache_clear()           # forget the copy in memory
    again = load_glyphs(max_classes_per_script=SMALL, data_home=home)
    assert again.images.shape[1:] == (20, 28, 28)
    # reading the file needs none of the font packages
    monkeypatch.setitem(sys.modules, "PIL", None)
    _cache._read.cache_clear()
    load_glyphs(max_classes_per_script=SMALL, data_home=home)


@pytest.mark.parametrize("module, package", [("matplotlib", "matplotlib"), ("PIL", "Pillow"),
                                             ("fontTools", "fontTools")])
def test_missing_font_package_is_named(tmp_path, monkeypatch, module, package):
    monkeypatch.setitem(sys.modules, module, None)   # import fails as if not installed
    with pytest.raises(ImportError, match=f"package '{package}'.*pip install {package}"):
        load_glyphs(max_classes_per_script=2, data_home=tmp_path)
    assert not (tmp_path / "msr_sklearn").exists() or \
        not any((tmp_path / "msr_sklearn").iterdir())


# ------------------------------------------------------------------ the episodes
@pytest.mark.parametrize("n_way, n_shot, n_query", [(5, 1, 5), (5, 5, 3), (20, 1, 1)])
def test_shapes_and_support_first(home, n_way, n_shot, n_query):
    tasks = _tasks(home, 4, n_way=n_way, n_shot=n_shot, n_query=n_query, split="test",
                   random_state=0)
    n_support = n_way * n_shot
    for X, y in tasks:
        assert X.shape == (n_way * (n_shot + n_query), 1, 28, 28)
        assert X.dtype == np.float32 and y.dtype == np.int64
        assert X.min() >= 0 and X.max() <= 1
        labels, counts = np.unique(y[:n_support], return_counts=True)
        assert len(labels) == n_way and (counts == n_shot).all()
        labels_q, counts_q = np.unique(y[n_support:], return_counts=True)
        assert np.array_equal(labels_q, labels) and (counts_q == n_query).all()
    X, _ = _tasks(home, 1, flat=True, random_state=0)[0]
    assert X.shape == (30, 784)


def test_deterministic_and_labels_fresh(home):
    a = _tasks(home, 5, random_state=3)
    b = _tasks(home, 5, random_state=3)
    c = _tasks(home, 5, random_state=4)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    _, info = _tasks(home, 200, return_info=True, random_state=0)
    assert (info.groupby(["task", "character"]).label.nunique() == 1).all()
    assert info.groupby("character").label.nunique().max() > 10


def test_support_is_clean_and_query_an_exact_d4_permutation(home):
    g = load_glyphs(max_classes_per_script=SMALL, data_home=home)
    tasks, info = _tasks(home, 30, return_info=True, random_state=1)
    rows = np.concatenate([X for X, _ in tasks]).reshape(len(info), 784)
    clean = g.images[info.class_index, info.instance].reshape(len(info), 784) / 255
    support = (info.role == "support").to_numpy()
    np.testing.assert_allclose(rows[support], clean[support], atol=1e-6)
    assert not info[support].rotation.any() and not info[support].flip.any()
    elements = set()
    for k in np.flatnonzero(~support):
        element = (int(info.rotation[k]), int(info.flip[k]))
        permutation = transform_grid(np.arange(784).reshape(28, 28), element).ravel()
        np.testing.assert_allclose(rows[k], clean[k][permutation], atol=1e-6)
        elements.add(element)
    assert elements == set(grid_transforms("d4"))   # all 8 elements occur


@pytest.mark.parametrize("augment, rotations, flips", [(("rot90",), 4, 1), (("flip",), 1, 2),
                                                       ((), 1, 1)])
def test_augment_choice(home, augment, rotations, flips):
    _, info = _tasks(home, 20, augment=augment, return_info=True, random_state=0)
    query = info[info.role == "query"]
    assert query.rotation.nunique() == rotations and query.flip.nunique() == flips


def test_augment_support(home):
    _, info = _tasks(home, 20, augment_support=True, return_info=True, random_state=0)
    support = info[info.role == "support"]
    assert support.rotation.nunique() == 4 and support.flip.nunique() == 2


def test_errors_name_the_problem(home):
    with pytest.raises(ValueError, match="n_way=30 exceeds the .* classes of the 'val'"):
        _tasks(home, 1, n_way=30, split="val")
    with pytest.raises(ValueError, match="n_shot \\+ n_query = 21 exceeds the 20 items"):
        _tasks(home, 1, n_shot=1, n_query=20)
    with pytest.raises(ValueError, match="split must be one of"):
        _tasks(home, 1, split="background")
    with pytest.raises(ValueError, match="unknown augmentation"):
        _tasks(home, 1, augment=("rot45",))
    with pytest.raises(ValueError, match="image_size must be an integer >= 8"):
        load_glyphs(image_size=4)


def test_rendering_is_deterministic(home):
    cached = load_glyphs(max_classes_per_script=SMALL, data_home=home)
    again = glyphs_module._render(28, SMALL, progress=False)
    np.testing.assert_array_equal(again["images"], cached.images)
    np.testing.assert_array_equal(again["font"], cached.font)
