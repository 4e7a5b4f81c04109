"""Aug-Glyphs: an Omniglot-scale few-shot set rendered from the fonts that ship with matplotlib.

No published Omniglot-like data set installs without a download, but matplotlib
bundles 16 Unicode text fonts (DejaVu Sans, Sans Mono and Serif in 4 styles each,
STIX General in 4) and 6 Computer Modern fonts whose ASCII letters are usable. Every
letter (Unicode category ``Lu``, ``Ll``, ``Lt`` or ``Lo``) that at least 10 of these
fonts draw becomes a class, as a character of an alphabet does in Omniglot, and the
fonts play Omniglot's drawers.

Rendering (once, then cached on disk)
-------------------------------------
Pillow draws each letter with every font that has it, at 4× resolution, scaled per
font so that a capital ``H`` is 16 of 28 pixels tall, so letters keep their relative
sizes (``o`` stays smaller than ``O``); a glyph wider or taller than 22 pixels is
shrunk to fit. A drawing with no ink, or one under 3 pixels on its longer side, is
dropped, as are the drawings a font shares between 5 or more code points (its
placeholders). Each class gets 20 instances: its fonts in a seeded order, repeated
as needed, each under its own random jitter: a scaling by 0.85-1.15 with an aspect
change of up to ±10 %, a horizontal shear (slant) of up to ±0.2, a translation of up
to ±1.5 pixels and a smooth elastic displacement field of about 0.7 pixels, then
averaged down to 28×28 (ink 1 on 0). The jitter has no reflection and no rotation
beyond the few degrees that the slant and the elastic field imply (at most 9°
measured), so the D4 transformations of the queries are new to a learner that has
only seen the support.

Classes that the Aug protocol cannot tell apart
-----------------------------------------------
In each font, two letters count as *the same* when their centred drawings (scaled to
unit norm) lie within 0.1 of each other, and as *D4-confusable* when a rotation by a
multiple of 90° or a flip of one lies within 0.5 of the other and at most 0.6 times
as far as the plain pair (the transformation, not a shared body under another accent,
makes them alike); a pair counts when that holds in at least half of the fonts that
draw both. Letters are kept greedily, most fonts first (then the lowest code point),
unless they count with a kept letter. This drops homoglyphs across scripts (Greek
``Α`` and Cyrillic ``А`` for Latin ``A``: 121 letters) and letters that the query
transformations turn into a kept one (``d p q`` for ``b``, ``u`` for ``n``, ``Я``
for ``R``, turned letters such as ``ɐ ɥ ʌ``, ``Ó`` for ``Ò``: 182 letters), and keeps
letters that differ only by an accent (``È É``). So no two classes of an episode are
the same up to the query transformations, and no meta-test letter is a meta-train
letter in disguise. ``load_glyphs().merged`` lists every dropped letter and why.

Splits, by script
-----------------
Class-disjoint, as Omniglot's background and evaluation alphabets:
:data:`AUG_GLYPHS_SPLITS`. Of 1,390 candidate letters, 1,087 classes remain:
meta-train 613 (Latin 599, letter-like symbols 14), meta-validation 261 (Greek, many
of them polytonic variants), meta-test 213 (Cyrillic 118, Armenian 56, Georgian 39).
Every class has 20 images drawn by 10 to 20 distinct fonts (median 12).
"""

from __future__ import annotations

import hashlib
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch, check_random_state
from threadpoolctl import threadpool_limits

from ._cache import cache_path, cached_arrays
from ._episodes import (
    check_augment,
    check_bool,
    check_choice,
    check_episode_size,
    check_int,
    draw_episodes,
    info_frame,
    transform_many,
)

__all__ = ["AUG_GLYPHS_SPLITS", "load_aug_glyphs_tasks", "load_glyphs"]

#: the scripts of each split (a letter's script is the first word of its Unicode name;
#: "OTHER" is every other letter, such as the double-struck ones)
AUG_GLYPHS_SPLITS = {"train": ("LATIN", "OTHER"), "val": ("GREEK",),
                     "test": ("CYRILLIC", "ARMENIAN", "GEORGIAN")}

#: bump when the rendering changes: it names the cache file
_VERSION = 1
#: matplotlib's font files used, and whether only their ASCII letters are (the
#: Computer Modern files map other code points to TeX's symbols)
_FONT_FILES = tuple((f"DejaVu{family}{style}.ttf", False)
                    for family in ("Sans", "SansMono", "Serif")
                    for style in ("", "-Bold", "-Oblique" if family != "Serif" else "-Italic",
                                  "-BoldOblique" if family != "Serif" else "-BoldItalic")) \
    + tuple((f"STIXGeneral{style}.ttf", False) for style in ("", "Bol", "Ita", "BolIta")) \
    + tuple((f"cm{name}10.ttf", True) for name in ("r", "b", "ss", "ti", "tt", "mi"))
_LETTER_CATEGORIES = ("Lu", "Ll", "Lt", "Lo")
_MIN_FONTS = 10
_N_INSTANCES = 20
_SUPERSAMPLE = 4
#: sizes in output pixels of a 28-pixel image (scaled with ``image_size``)
_CAP_HEIGHT, _MAX_EXTENT, _MIN_EXTENT = 16 / 28, 22 / 28, 3 / 28
_JITTER = {"scale": 0.15, "aspect": 0.1, "shear": 0.2, "shift": 1.5 / 28, "elastic": 0.7 / 28}
_PLACEHOLDER_SHARE = 5
#: see _merge_confusable; calibrated on pairs such as A/Α (0.00), ɐ/a (0.09 under
#: a 180° turn), b/d (0.36 under a flip, 0.88 plain) against È/É (0.23 plain, 0.87
#: under D4) and Ö/Õ (0.20 plain, 0.29 under a flip): medians over their fonts
_SAME_DISTANCE, _D4_DISTANCE, _D4_RATIO = 0.1, 0.5, 0.6
_SEED = 20


def _font_paths():
    """``[(name, path, ascii_only)]`` of matplotlib's font files, with clear errors."""
    for module, package in (("matplotlib", "matplotlib"), ("PIL", "Pillow"),
                            ("fontTools", "fontTools")):
        try:
            __import__(module)
        except ImportError as error:
            raise ImportError(
                f"Aug-Glyphs renders the fonts bundled with matplotlib, which needs the "
                f"package {package!r}; install it with `pip install {package}` (or "
                f"`pip install msr_sklearn[glyphs]`)") from error
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = [(name, folder / name, ascii_only) for name, ascii_only in _FONT_FILES
             if (folder / name).is_file()]
    if len(found) < _MIN_FONTS:
        raise FileNotFoundError(
            f"Aug-Glyphs needs matplotlib's bundled fonts, but only {len(found)} of the "
            f"{len(_FONT_FILES)} font files are in {folder}; reinstall matplotlib")
    return found


def _script(codepoint):
    word = unicodedata.name(chr(codepoint), "").split(" ")[0]
    known = {s for scripts in AUG_GLYPHS_SPLITS.values() for s in scripts}
    return word if word in known else "OTHER"


def _cache_path(data_home, image_size, max_classes_per_script):
    limit = "" if max_classes_per_script is None else f"_max{max_classes_per_script}"
    return cache_path(data_home, f"aug_glyphs_v{_VERSION}_{image_size}px{limit}.npz")


def _provenance():
    """The versions that shaped the pixels, stored with the cache."""
    import fontTools
    import matplotlib
    from PIL import Image, features

    return (f"matplotlib {matplotlib.__version__}, Pillow {Image.__version__}, "
            f"FreeType {features.version('freetype2')}, fontTools {fontTools.version}")


# ------------------------------------------------------------------------ rendering
def _candidates(fonts, max_classes_per_script):
    """Code points drawn by at least ``_MIN_FONTS`` fonts -> the indices of those fonts."""
    from fontTools.ttLib import TTFont

    drawn = {}
    for f, (_, path, ascii_only) in enumerate(fonts):
        for codepoint in TTFont(str(path), lazy=True).getBestCmap():
            char = chr(codepoint)
            if unicodedata.category(char) in _LETTER_CATEGORIES and \
                    (char.isascii() or not ascii_only):
                drawn.setdefault(codepoint, []).append(f)
    chosen = sorted(c for c, f in drawn.items() if len(f) >= _MIN_FONTS)
    if max_classes_per_script is not None:
        by_script = {}
        for c in chosen:
            by_script.setdefault(_script(c), []).append(c)
        chosen = []
        for members in by_script.values():
            take = min(max_classes_per_script, len(members))
            chosen += [members[i] for i in np.linspace(0, len(members) - 1, take).round()
                       .astype(int)]
        chosen = sorted(set(chosen))
    return {c: drawn[c] for c in chosen}


def _draw(font, char):
    """The glyph's ink, cropped, as a uint8 array (or None when blank)."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(char)
    canvas = Image.new("L", (max(right - left, 1) + 4, max(bottom - top, 1) + 4), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), char, font=font, fill=255)
    ink = np.asarray(canvas)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(rows):
        return None
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _sized_fonts(fonts, image_size):
    """Pillow fonts scaled so that a capital H is ``_CAP_HEIGHT`` of the (4×) image."""
    from PIL import ImageFont

    target = _CAP_HEIGHT * image_size * _SUPERSAMPLE
    sized = []
    for _, path, _ in fonts:
        probe = _draw(ImageFont.truetype(str(path), 200), "H")
        sized.append(ImageFont.truetype(str(path), max(1, round(200 * target / len(probe)))))
    return sized


def _place(glyph, image_size, rng=None):
    """The glyph centred on an ``image_size`` square, under a random jitter if ``rng``.

    Output pixels (at 4× resolution) read the glyph through the inverse of the jitter's
    affine map and a smooth displacement field, bilinearly, and are then averaged
    4×4. Returns float32 in [0, 1].
    """
    from scipy.ndimage import map_coordinates

    side = image_size * _SUPERSAMPLE
    h, w = glyph.shape
    base = min(1.0, _MAX_EXTENT * side / max(h, w))   # shrink what would not fit
    # output coordinates relative to the centre, in glyph pixels at the base scale
    v, u = np.mgrid[0:side, 0:side].astype(np.float64) + 0.5 - side / 2
    if rng is not None:
        scale = 1 + rng.uniform(-_JITTER["scale"], _JITTER["scale"])
        aspect = np.exp(rng.uniform(-_JITTER["aspect"], _JITTER["aspect"]))
        shear = rng.uniform(-_JITTER["shear"], _JITTER["shear"])
        shift = rng.uniform(-1, 1, 2) * _JITTER["shift"] * side
        displacement = rng.normal(0, _JITTER["elastic"] * side, (2, 4, 4))
        sx, sy = scale * np.sqrt(aspect), scale / np.sqrt(aspect)
        # forward: x' = sx * x + shear * sy * y + shift_x, y' = sy * y + shift_y
        y = (v - shift[1]) / sy
        x = (u - shift[0] - shear * sy * y) / sx
        bumps = _smooth_basis(side)
        v, u = y + bumps @ displacement[0] @ bumps.T, x + bumps @ displacement[1] @ bumps.T
    rows = v / base + (h - 1) / 2
    cols = u / base + (w - 1) / 2
    big = map_coordinates(glyph.astype(np.float32) / 255, [rows, cols], order=1, cval=0.0,
                          prefilter=False)
    small = big.reshape(image_size, _SUPERSAMPLE, image_size, _SUPERSAMPLE).mean(axis=(1, 3))
    return np.clip(small, 0, 1).astype(np.float32)


@lru_cache(maxsize=4)
def _smooth_basis(side, n=4):
    """``(side, n)`` Gaussian bumps, rows of unit norm: ``B @ D @ B.T`` with ``D`` of
    i.i.d. entries of standard deviation ``a`` is a smooth field of standard deviation
    ``a`` at every pixel."""
    centres = (np.arange(n) + 0.5) * side / n
    bumps = np.exp(-0.5 * ((np.arange(side)[:, None] + 0.5 - centres) / (side / n)) ** 2)
    return bumps / np.linalg.norm(bumps, axis=1, keepdims=True)


def _render(image_size, max_classes_per_script, progress=True):
    """Every step from the font files to the arrays that are cached."""
    from tqdm.auto import tqdm

    fonts = _font_paths()
    candidates = _candidates(fonts, max_classes_per_script)
    sized = _sized_fonts(fonts, image_size)
    min_extent = _MIN_EXTENT * image_size * _SUPERSAMPLE
    glyphs = {}                                   # (code point, font) -> ink
    for codepoint, drawers in tqdm(candidates.items(), desc="Aug-Glyphs: drawing",
                                   disable=not progress, unit="letter"):
        for f in drawers:
            ink = _draw(sized[f], chr(codepoint))
            if ink is not None and max(ink.shape) >= min_extent:
                glyphs[codepoint, f] = ink
    glyphs = _without_placeholders(glyphs)
    drawers = {}
    for codepoint, f in glyphs:
        drawers.setdefault(codepoint, []).append(f)
    classes = sorted(c for c, d in drawers.items() if len(d) >= _MIN_FONTS)
    clean = {key: _place(glyphs[key], image_size) for key in glyphs if key[0] in drawers}
    # small products: threads only add waiting on a busy machine
    with threadpool_limits(1, user_api="blas"):
        kept, merged = _merge_confusable(classes, drawers, clean, len(fonts))
    images = np.empty((len(kept), _N_INSTANCES, image_size, image_size), dtype=np.uint8)
    font_of = np.empty((len(kept), _N_INSTANCES), dtype=np.int16)
    for k, codepoint in enumerate(tqdm(kept, desc="Aug-Glyphs: instances",
                                       disable=not progress, unit="class")):
        # a class's own seed: its instances do not depend on the other classes
        rng = np.random.default_rng([_SEED, codepoint])
        order = np.asarray(drawers[codepoint])[rng.permutation(len(drawers[codepoint]))]
        for i in range(_N_INSTANCES):
            font_of[k, i] = order[i % len(order)]
            image = _place(glyphs[codepoint, font_of[k, i]], image_size, rng)
            images[k, i] = np.round(image * 255).astype(np.uint8)
    return {"images": images, "codepoint": np.asarray(kept, dtype=np.int32),
            "script": np.asarray([_script(c) for c in kept]), "font": font_of,
            "font_names": np.asarray([name for name, _, _ in fonts]),
            "merged_codepoint": np.asarray([m[0] for m in merged], dtype=np.int32),
            "merged_into": np.asarray([m[1] for m in merged], dtype=np.int32),
            "merged_reason": np.asarray([m[2] for m in merged]),
            "provenance": np.asarray(_provenance())}


def _without_placeholders(glyphs):
    """Drop the drawings that one font gives to ``_PLACEHOLDER_SHARE`` or more letters."""
    shared = {}
    for (codepoint, f), ink in glyphs.items():
        key = (f, ink.shape, hashlib.sha1(ink.tobytes()).digest())
        shared.setdefault(key, []).append(codepoint)
    drop = {(c, key[0]) for key, members in shared.items()
            if len(members) >= _PLACEHOLDER_SHARE for c in members}
    return {key: ink for key, ink in glyphs.items() if key not in drop}


def _d4(images):
    """The 8 D4 transforms of ``(n, H, W)`` images, in the order of ``grid_transforms``."""
    return [np.rot90(images[:, :, ::-1] if f else images, r, axes=(1, 2))
            for f in (0, 1) for r in range(4)]


def _merge_confusable(classes, drawers, clean, n_fonts):
    """Drop letters that are the same as a kept one up to D4, in most shared fonts.

    In each font, two letters are *the same* when their centred drawings (scaled to
    unit norm) are within ``_SAME_DISTANCE``, and *D4-confusable* when a rotation or
    flip of one is within ``_D4_DISTANCE`` of the other and closer than
    ``_D4_RATIO`` times their plain distance (so the transformation, not a shared
    body with a different accent, makes them alike). A pair counts when that holds
    in at least half of the fonts that draw both. Letters are then kept greedily
    (most fonts first, then the lowest code point) unless they count with a kept one.

    Returns the kept code points and ``[(dropped, kept, reason)]``, ``reason``
    ``"same"`` (a homoglyph) or ``"d4"``.
    """
    index = {c: i for i, c in enumerate(classes)}
    n = len(classes)
    common = np.zeros((n, n), dtype=np.int32)
    votes = np.zeros((2, n, n), dtype=np.int32)   # [same, D4-confusable]
    for f in range(n_fonts):
        members = [c for c in classes if (c, f) in clean]
        if len(members) < 2:
            continue
        stack = np.stack([clean[c, f] for c in members])
        stack /= np.linalg.norm(stack, axis=(1, 2), keepdims=True)
        flat = stack.reshape(len(members), -1)
        distance = [np.sqrt(np.maximum(2 - 2 * g.reshape(len(members), -1) @ flat.T, 0))
                    for g in _d4(stack)]
        moved = np.minimum.reduce(distance[1:])
        block = np.ix_(*[np.asarray([index[c] for c in members])] * 2)
        common[block] += 1
        votes[0][block] += distance[0] < _SAME_DISTANCE
        votes[1][block] += (moved < _D4_DISTANCE) & (moved < _D4_RATIO * distance[0])
    counts = votes >= 0.5 * np.maximum(common, 1)
    counts |= counts.transpose(0, 2, 1)
    counts[:, np.arange(n), np.arange(n)] = False
    kept, merged = [], []
    for i in sorted(range(n), key=lambda i: (-len(drawers[classes[i]]), classes[i])):
        clash = [j for j in kept if counts[0, i, j] or counts[1, i, j]]
        if not clash:
            kept.append(i)
            continue
        j = next((j for j in clash if counts[0, i, j]), clash[0])
        merged.append((classes[i], classes[j], "same" if counts[0, i, j] else "d4"))
    return sorted(classes[i] for i in kept), sorted(merged)


# -------------------------------------------------------------------------- loading
def load_glyphs(image_size=28, max_classes_per_script=None, data_home=None):
    """The rendered Aug-Glyphs classes: 20 images of every letter class, and their splits.

    Renders the set on the first call (about a minute, with a progress bar) and caches
    it in ``get_data_home(data_home) / "msr_sklearn"``; later calls read the file,
    and need neither matplotlib nor Pillow. The file is the data set: it is not
    re-rendered when a package changes (the versions that made it are in
    ``provenance``).

    Parameters
    ----------
    image_size : int, default=28
        Side of the square images (at least 8); every size is rendered and cached on
        its own.
    max_classes_per_script : int or None, default=None
        Render only this many candidate letters of each script (evenly spaced in code
        point order), before the confusable letters are merged: a small set for
        tests and examples, cached under its own name. ``None``: all of them.
    data_home : str or path-like, default=None
        The data folder of :func:`sklearn.datasets.get_data_home`.

    Returns
    -------
    glyphs : sklearn.utils.Bunch
        ``images`` (uint8, ``(n_classes, 20, image_size, image_size)``, ink 255 on 0),
        ``codepoint``, ``character``, ``script`` and ``split`` (one per class),
        ``font`` (index into ``font_names`` of every image), ``font_names``, and the
        merged letters ``merged`` (a DataFrame: ``codepoint``, ``character``,
        ``into`` (the kept letter), ``reason``: ``"same"`` or ``"d4"``).

    Examples
    --------
    >>> import tempfile
    >>> from msr_sklearn.datasets import load_glyphs
    >>> home = tempfile.mkdtemp()
    >>> glyphs = load_glyphs(max_classes_per_script=8, data_home=home)
    >>> glyphs.images.shape[1:], glyphs.images.dtype
    ((20, 28, 28), dtype('uint8'))
    >>> sorted(set(glyphs.split.tolist()))
    ['test', 'train', 'val']
    >>> import shutil; shutil.rmtree(home)
    """
    import pandas as pd

    image_size = check_int("image_size", image_size, 8)
    if max_classes_per_script is not None:
        max_classes_per_script = check_int("max_classes_per_script", max_classes_per_script, 1)
    path = _cache_path(data_home, image_size, max_classes_per_script)
    arrays = cached_arrays(path, lambda: _render(image_size, max_classes_per_script))
    merged = pd.DataFrame({"codepoint": arrays["merged_codepoint"],
                           "character": [chr(c) for c in arrays["merged_codepoint"]],
                           "into": [chr(c) for c in arrays["merged_into"]],
                           "reason": arrays["merged_reason"]})
    split_of = {s: split for split, names in AUG_GLYPHS_SPLITS.items() for s in names}
    return Bunch(images=arrays["images"], codepoint=arrays["codepoint"],
                 character=np.asarray([chr(c) for c in arrays["codepoint"]]),
                 script=arrays["script"],
                 split=np.asarray([split_of[s] for s in arrays["script"]]), font=arrays["font"],
                 font_names=arrays["font_names"], provenance=str(arrays["provenance"]),
                 merged=merged)


def load_aug_glyphs_tasks(n_tasks, n_way=5, n_shot=1, n_query=5, split="train",
                          augment=("rot90", "flip"), shift=0, augment_support=False,
                          image_size=28, flat=False, max_classes_per_script=None,
                          data_home=None, return_info=False, random_state=None):
    """N-way K-shot episodes of rendered letters: clean support, D4-augmented query.

    The Aug-Omniglot protocol of the MSR paper on :func:`load_glyphs`: each episode
    draws ``n_way`` letter classes of one split (splits are class-disjoint, by
    script), ``n_shot + n_query`` of each class's 20 images, fresh label values
    (``n_way`` distinct integers in ``0..999``, so the learner's label encoding puts
    the classes in a random order), and transforms every query image by an
    independent random element of the group that ``augment`` generates, an exact
    permutation of the square image's pixels. Support images stay clean unless
    ``augment_support``.

    Use the tasks with ``MetaSymmetryLearner(support_split="first",
    n_support=n_way * n_shot, ...)``: the support rows come first in every task.

    Parameters
    ----------
    n_tasks : int
        Number of episodes.
    n_way : int, default=5
        Classes per episode; 5 and 20 are Omniglot's usual settings.
    n_shot : int, default=1
        Support images per class.
    n_query : int, default=5
        Query images per class (``n_shot + n_query <= 20``).
    split : {"train", "val", "test"}, default="train"
        Meta-train (Latin), meta-validation (Greek) or meta-test (Cyrillic, Armenian,
        Georgian) letters; see :data:`AUG_GLYPHS_SPLITS`.
    augment : tuple of {"rot90", "flip"} or None, default=("rot90", "flip")
        ``("rot90",)``: a uniformly random rotation by a multiple of 90° (C4);
        ``("flip",)``: a left-right flip with probability 1/2; both: a uniform element
        of D4 (flip, then rotate, as :func:`~msr_sklearn.groups.grid_transforms`).
        ``()`` or ``None``: none.
    shift : int, default=0
        Maximum integer translation per axis, with zero fill, after the rotation.
    augment_support : bool, default=False
        Also augment the support images (independent draws): the data-augmentation
        baseline's training episodes. The protocol's test episodes keep ``False``.
    image_size : int, default=28
        Side of the images (a size other than 28 is rendered and cached on its own).
    flat : bool, default=False
        Return images as rows of ``image_size**2`` pixels instead of
        ``(1, image_size, image_size)``.
    max_classes_per_script : int or None, default=None
        Use the small set of :func:`load_glyphs` with at most this many candidate
        letters per script (for tests and examples).
    data_home : str or path-like, default=None
        Where the rendered set is cached (:func:`sklearn.datasets.get_data_home`).
    return_info : bool, default=False
        Also return a DataFrame describing every row.
    random_state : int, RandomState or None, default=None
        Controls the episodes; the rendered set and its splits are fixed.

    Returns
    -------
    tasks : list of (X, y)
        ``X`` float32 in ``[0, 1]`` (ink 1 on 0) of shape ``(n_rows, 1, image_size,
        image_size)``, or ``(n_rows, image_size**2)`` with ``flat``; ``y`` int64 of
        shape ``(n_rows,)``, ``n_rows = n_way * (n_shot + n_query)``. The first
        ``n_way * n_shot`` rows are the support (in random order), the rest the query.
    info : pandas.DataFrame, only if ``return_info``
        One row per image row of ``tasks``: ``task``, ``row``, ``role``
        (``"support"``/``"query"``), ``label``, ``character``, ``class_index`` and
        ``instance`` (its image ``glyphs.images[class_index, instance]``), ``font``,
        ``rotation`` (quarter turns), ``flip``, ``shift_y``, ``shift_x``.

    Examples
    --------
    >>> import tempfile
    >>> from msr_sklearn.datasets import load_aug_glyphs_tasks
    >>> home = tempfile.mkdtemp()
    >>> tasks = load_aug_glyphs_tasks(3, n_way=5, n_shot=1, n_query=2, split="test",
    ...                               max_classes_per_script=8, data_home=home,
    ...                               random_state=0)
    >>> X, y = tasks[0]
    >>> X.shape, X.dtype, y.shape
    ((15, 1, 28, 28), dtype('float32'), (15,))
    >>> len(set(y[:5])) == 5 and set(y[5:]) == set(y[:5])   # one support image per class
    True
    >>> import shutil; shutil.rmtree(home)
    """
    n_tasks = check_int("n_tasks", n_tasks, 1)
    n_way = check_int("n_way", n_way, 2)
    n_shot = check_int("n_shot", n_shot, 1)
    n_query = check_int("n_query", n_query, 1)
    shift = check_int("shift", shift, 0)
    check_choice("split", split, tuple(AUG_GLYPHS_SPLITS))
    augment = check_augment(augment)
    augment_support = check_bool("augment_support", augment_support)
    flat = check_bool("flat", flat)
    return_info = check_bool("return_info", return_info)
    glyphs = load_glyphs(image_size, max_classes_per_script, data_home)
    image_size = glyphs.images.shape[-1]
    if shift >= image_size:
        raise ValueError(f"shift must be < {image_size} (the image side); got {shift}")
    n_instances = glyphs.images.shape[1]
    # an item is class * n_instances + instance
    by_class = {int(c): c * n_instances + np.arange(n_instances)
                for c in np.flatnonzero(glyphs.split == split)}
    check_episode_size(by_class, n_way, n_shot, n_query, f"the {split!r} split")
    rng = check_random_state(random_state)
    draws, ways, labels = draw_episodes(rng, by_class, n_tasks, n_way, n_shot, n_query,
                                        augment, shift, augment_support)
    items = draws["item"].ravel()
    images = glyphs.images.reshape(-1, image_size, image_size)[items].astype(np.float32)
    images /= 255
    images = transform_many(images, draws["rotation"].ravel(), draws["flip"].ravel(),
                            draws["shift_y"].ravel(), draws["shift_x"].ravel(), shift)
    n_rows = n_way * (n_shot + n_query)
    shape = (image_size * image_size,) if flat else (1, image_size, image_size)
    images = images.reshape(n_tasks, n_rows, *shape)
    tasks = [(images[t].copy(), labels[t][draws["way"][t]]) for t in range(n_tasks)]
    if not return_info:
        return tasks
    info = info_frame(draws, ways, labels, n_way * n_shot, "character", glyphs.character)
    class_index, instance = np.divmod(items, n_instances)
    info.insert(5, "class_index", class_index)
    info.insert(6, "instance", instance)
    info.insert(7, "font", glyphs.font_names[glyphs.font[class_index, instance]])
    return tasks, info.drop(columns="item")
