"""Zip archives of ``.npy`` arrays and JSON: atomic writes and a reader that checks first.

:func:`write_archive` writes a file so that a crash, a second writer or a planted link
never leaves anything but the previous file or the new one at the path.
:func:`read_archive` opens a file that may be damaged or hostile: it checks the member
names and their declared sizes against caps before it decompresses anything, parses
each ``.npy`` header from the first bytes of its member and compares the shape and
dtype with what the caller expects, and parses JSON with a size cap and a depth limit.
Nothing is ever unpickled.

Exceptions of the reader (the whole contract):

* ``FileNotFoundError``: there is no file at the path;
* ``OSError``: the operating system cannot read it (permissions, an I/O error);
* ``ValueError("cannot read a <what> from '<path>': <what is wrong>")``: anything about
  its content, whatever failed underneath (zlib, zipfile, numpy, json, a bogus size).

:func:`write_archive` raises ``OSError`` of the type the system gave (disk full,
read-only file system, a missing directory), with a message that names the path.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format

__all__ = ["ALLOWED_DTYPES", "ArchiveReader", "MAX_JSON_BYTES", "MAX_JSON_DEPTH",
           "MAX_MEMBERS", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "TEMP_SUFFIX", "npy_bytes",
           "read_archive", "write_archive"]

#: members per archive (a checkpoint of a 100-layer network has a few thousand)
MAX_MEMBERS = 100_000
#: the declared uncompressed size of one member: 1 GiB is a 268M-entry float32 ``U``,
#: beyond what meta-training fits in memory with its meta-gradient
MAX_MEMBER_BYTES = 2**30
#: the declared uncompressed size of all members together (a checkpoint holds the
#: model about five times: symmetry, model, two Adam moments, early stopping's best)
MAX_TOTAL_BYTES = 2**33
#: one JSON member (history columns that are not numbers can be long lists)
MAX_JSON_BYTES = 2**26
#: nesting of a JSON member (this library's trees are less than 10 deep)
MAX_JSON_DEPTH = 64
#: the dtypes an ``.npy`` member may have: numbers and booleans, never objects
ALLOWED_DTYPES = ("<f4", "<f8", "<i4", "<i8", "|u1", "|b1")
#: the suffix of the temporary files that :func:`write_archive` renames into place
TEMP_SUFFIX = ".tmp"
#: numpy's own limit on an ``.npy`` header
_MAX_NPY_HEADER = 10_000
#: a member name: relative, "/"-separated, of letters, digits and ``_.-``
_NAME = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
#: errors of the operating system that are not about the file's content
_IO_ERRNOS = {errno.EIO, errno.EACCES, errno.EPERM, errno.ENOMEM, errno.ENXIO, errno.EISDIR}


# ------------------------------------------------------------------------ writing
def npy_bytes(array):
    """``array`` as the bytes of an ``.npy`` file (C order, no pickle).

    Parameters
    ----------
    array : array-like
        Numbers or booleans.

    Returns
    -------
    bytes

    Examples
    --------
    >>> import numpy as np
    >>> from msr_sklearn.persistence import npy_bytes
    >>> npy_bytes(np.zeros(3, dtype=np.float32))[:6]
    b'\\x93NUMPY'
    """
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, order="C"), allow_pickle=False)  # keeps 0-d arrays 0-d
    return buf.getvalue()


def write_archive(path, members):
    """Write a zip of ``members`` at ``path``, atomically and durably.

    The zip goes to a new temporary file in ``path``'s directory, created exclusively
    under a unique name (``tempfile.mkstemp``: it never opens an existing file or
    follows a planted link), is flushed and fsynced, then renamed over ``path``
    (``os.replace``), and the directory is fsynced. A crash or a power cut at any
    moment leaves the previous file or the new one, never a partial file at ``path``;
    two processes writing the same path each rename a complete file of their own. On
    any failure the temporary file is removed.

    Parameters
    ----------
    path : str or path
        The file to write (replaced if it exists).
    members : dict of str to bytes
        The archive's members, name -> content, in the order to write them.

    Raises
    ------
    OSError
        Of the type the system raised (``FileNotFoundError`` for a missing directory,
        ``PermissionError``, ``OSError`` for a full disk or a read-only file system),
        with a message that names ``path``.

    Examples
    --------
    >>> import os, tempfile, zipfile
    >>> from msr_sklearn.persistence import write_archive
    >>> path = os.path.join(tempfile.mkdtemp(), "a.zip")
    >>> write_archive(path, {"hello.json": b"{}"})
    >>> zipfile.ZipFile(path).namelist()
    ['hello.json']
    >>> os.listdir(os.path.dirname(path))
    ['a.zip']
    """
    path = Path(path)
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp's 0600 -> the mode open() would give
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name, data in members.items():
                    zf.writestr(name, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise _naming(exc, path) from exc


def _naming(exc, path):
    """``exc`` again (same type and errno) with a message that names ``path``."""
    message = f"cannot write {str(path)!r}: {exc.strerror or exc}"
    try:
        return type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)
    except Exception:  # an OSError subclass with another constructor
        return OSError(exc.errno, message)


def _umask():
    """The process's umask, without changing it where the system tells (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------ reading
@contextlib.contextmanager
def read_archive(path, what, names=None):
    """Open the archive at ``path`` for checked reading; yields an :class:`ArchiveReader`.

    The member names, their count and their declared sizes are checked when the file
    is opened, before anything is decompressed. Any failure inside the ``with`` block
    that is not the operating system's becomes ``ValueError("cannot read a <what> from
    '<path>': ...")``; a ``ValueError`` or ``TypeError`` raised by the caller's own
    checks keeps its message after the colon.

    Parameters
    ----------
    path : str or path
        The file.
    what : str
        What the file should hold, for the messages (``"LearnedSymmetry"``).
    names : str or None, default=None
        A regular expression every member name must match in full (the format's
        layout); ``None``: any safe relative name.

    Yields
    ------
    ArchiveReader

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    OSError
        The system cannot read it (permissions, an I/O error).
    ValueError
        Its content is damaged, hostile or of another kind.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from msr_sklearn.persistence import npy_bytes, read_archive, write_archive
    >>> path = os.path.join(tempfile.mkdtemp(), "a.zip")
    >>> write_archive(path, {"x.npy": npy_bytes(np.arange(3.0))})
    >>> with read_archive(path, "test file") as archive:
    ...     archive.array("x.npy", shape=(3,), dtype="<f8")
    array([0., 1., 2.])
    >>> with read_archive(path, "test file") as archive:
    ...     archive.array("x.npy", shape=(4,))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: cannot read a test file from '...a.zip': its member 'x.npy' holds an array ...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {str(path)!r}")
    where = f"cannot read a {what} from {str(path)!r}"
    with open(path, "rb") as file:  # an OSError here is the system's: it propagates
        try:
            with zipfile.ZipFile(file) as zf:
                yield ArchiveReader(zf, names)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{where}: {_corrupted(exc)}") from exc
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        except OSError as exc:
            if exc.errno in _IO_ERRNOS:
                raise
            raise ValueError(f"{where}: {_corrupted(exc)}") from exc
        except Exception as exc:  # zlib.error, BadZipFile, NotImplementedError, MemoryError...
            raise ValueError(f"{where}: {_corrupted(exc)}") from exc


def _corrupted(exc):
    return (f"the file is truncated, corrupted or of another kind ({type(exc).__name__}: "
            f"{exc})")


class ArchiveReader:
    """Checked access to the members of an open zip (made by :func:`read_archive`).

    Creating it checks the structure: at most :data:`MAX_MEMBERS` members, safe and
    unique names (relative, no ``..``, matching ``names``), no encryption, stored or
    deflated only, each declared size at most :data:`MAX_MEMBER_BYTES` and their sum at
    most :data:`MAX_TOTAL_BYTES`. Every member is read to its end, so its CRC-32 is
    checked.

    Parameters
    ----------
    zf : zipfile.ZipFile
        The open archive.
    names : str or None, default=None
        A regular expression every member name must match in full.

    Attributes
    ----------
    names : list of str
        The members, in the archive's order.

    Examples
    --------
    >>> import io, zipfile
    >>> from msr_sklearn.persistence import ArchiveReader
    >>> buf = io.BytesIO()
    >>> with zipfile.ZipFile(buf, "w") as zf:
    ...     zf.writestr("meta.json", b'{"a": [1, 2]}')
    >>> ArchiveReader(zipfile.ZipFile(buf)).json("meta.json")
    {'a': [1, 2]}
    >>> with zipfile.ZipFile(buf, "a") as zf:
    ...     zf.writestr("../evil", b"")
    >>> ArchiveReader(zipfile.ZipFile(buf))
    Traceback (most recent call last):
    ...
    ValueError: it has a member named '../evil', which this format does not have
    """

    def __init__(self, zf, names=None):
        self._zf = zf
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ValueError(f"it has {len(infos)} members; a file of this library has at "
                             f"most {MAX_MEMBERS}")
        pattern = None if names is None else re.compile(names)
        self._infos, total = {}, 0
        for info in infos:
            name = info.filename
            if (not _NAME.fullmatch(name) or any(p in (".", "..") for p in name.split("/"))
                    or (pattern is not None and not pattern.fullmatch(name))):
                raise ValueError(f"it has a member named {name!r}, which this format does "
                                 "not have")
            if name in self._infos:
                raise ValueError(f"it has two members named {name!r}")
            if info.flag_bits & 0x1:
                raise ValueError(f"its member {name!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ValueError(f"its member {name!r} uses compression method "
                                 f"{info.compress_type}; this library writes deflate")
            if info.file_size > MAX_MEMBER_BYTES:
                raise ValueError(f"its member {name!r} declares {info.file_size} bytes; the "
                                 f"limit is {MAX_MEMBER_BYTES} (MAX_MEMBER_BYTES)")
            total += info.file_size
            self._infos[name] = info
        if total > MAX_TOTAL_BYTES:
            raise ValueError(f"its members declare {total} bytes in all; the limit is "
                             f"{MAX_TOTAL_BYTES} (MAX_TOTAL_BYTES)")
        self.names = list(self._infos)

    def _info(self, name):
        if name not in self._infos:
            raise ValueError(f"it has no member {name!r}")
        return self._infos[name]

    def json(self, name, kind=dict):
        """The JSON value of member ``name``, checked to be a ``kind``.

        Parameters
        ----------
        name : str
            The member.
        kind : type or tuple of types, default=dict
            What the top-level value must be (``dict``, ``list``...).

        Returns
        -------
        object
            At most :data:`MAX_JSON_BYTES` long and :data:`MAX_JSON_DEPTH` deep, with
            no repeated key in an object.

        Examples
        --------
        >>> import io, zipfile
        >>> from msr_sklearn.persistence import ArchiveReader
        >>> buf = io.BytesIO()
        >>> with zipfile.ZipFile(buf, "w") as zf:
        ...     zf.writestr("a.json", b'{"a": 1, "a": 2}')
        >>> ArchiveReader(zipfile.ZipFile(buf)).json("a.json")
        Traceback (most recent call last):
        ...
        ValueError: its member 'a.json' repeats the key 'a'
        """
        info = self._info(name)
        if info.file_size > MAX_JSON_BYTES:
            raise ValueError(f"its member {name!r} declares {info.file_size} bytes; a JSON "
                             f"member has at most {MAX_JSON_BYTES} (MAX_JSON_BYTES)")
        with self._zf.open(info) as f:
            data = _read_to_end(f, info.file_size, name)

        def unique(pairs):
            keys = [k for k, _ in pairs]
            if len(set(keys)) < len(keys):
                twice = next(k for k in keys if keys.count(k) > 1)
                raise ValueError(f"its member {name!r} repeats the key {twice!r}")
            return dict(pairs)

        try:
            value = json.loads(data.decode("utf-8"), object_pairs_hook=unique)
        except RecursionError:
            raise ValueError(f"its member {name!r} is nested too deeply") from None
        _check_depth(value, name)
        if not isinstance(value, kind):
            raise ValueError(f"its member {name!r} holds a JSON {type(value).__name__}, not "
                             f"{_kind_name(kind)}")
        return value

    def array(self, name, shape=None, dtype=None, finite=True, shapes=None):
        """The array of ``.npy`` member ``name``, checked before its data is read.

        The header (shape, dtype, order) is parsed from the member's first bytes; its
        dtype must be one of :data:`ALLOWED_DTYPES` (and ``dtype`` when given), its shape
        ``shape`` (or one of ``shapes``) when given, and its size must be what the member
        declares. Only then is the data decompressed.

        Parameters
        ----------
        name : str
            The member.
        shape : tuple of int or None, default=None
            The expected shape.
        dtype : str, dtype or None, default=None
            The expected dtype.
        finite : bool, default=True
            Refuse NaN and infinities in a float array.
        shapes : collection of tuple or None, default=None
            The expected shapes, when several are allowed.

        Returns
        -------
        ndarray
            Writable, of the header's shape and dtype.

        Examples
        --------
        >>> import io, zipfile
        >>> import numpy as np
        >>> from msr_sklearn.persistence import ArchiveReader, npy_bytes
        >>> buf = io.BytesIO()
        >>> with zipfile.ZipFile(buf, "w") as zf:
        ...     zf.writestr("x.npy", npy_bytes(np.array([1.0, np.nan])))
        >>> ArchiveReader(zipfile.ZipFile(buf)).array("x.npy", finite=False)
        array([ 1., nan])
        >>> ArchiveReader(zipfile.ZipFile(buf)).array("x.npy")
        Traceback (most recent call last):
        ...
        ValueError: its member 'x.npy' holds NaN or infinite values
        """
        info = self._info(name)
        with self._zf.open(info) as f:
            head = _read_exact(f, 10, name)
            if head[:6] != b"\x93NUMPY" or head[6:8] not in (b"\x01\x00", b"\x02\x00"):
                raise ValueError(f"its member {name!r} is not an .npy array of version 1 or 2")
            if head[6] == 2:
                head += _read_exact(f, 2, name)
            size = int.from_bytes(head[8:], "little")
            if size > _MAX_NPY_HEADER:
                raise ValueError(f"its member {name!r} has an .npy header of {size} bytes")
            header = io.BytesIO(head + _read_exact(f, size, name))
            version = npy_format.read_magic(header)
            read_header = (npy_format.read_array_header_1_0 if version == (1, 0)
                           else npy_format.read_array_header_2_0)
            found, fortran, found_dtype = read_header(header, max_header_size=_MAX_NPY_HEADER)
            _check_header(name, found, found_dtype, shape, shapes, dtype)
            nbytes = math.prod(found) * found_dtype.itemsize
            if info.file_size != len(head) + size + nbytes:
                raise ValueError(f"its member {name!r} declares {info.file_size} bytes, but "
                                 f"its header describes {len(head) + size + nbytes}")
            data = bytearray(nbytes)
            view = memoryview(data)
            done = 0
            while done < nbytes:  # chunk by chunk: no second copy of a large array
                chunk = f.read(min(nbytes - done, 1 << 24))
                if not chunk:
                    raise ValueError(f"its member {name!r} ends early")
                view[done:done + len(chunk)] = chunk
                done += len(chunk)
            _read_to_end(f, 0, name)
        array = np.frombuffer(data, dtype=found_dtype).reshape(found,
                                                               order="F" if fortran else "C")
        if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"its member {name!r} holds NaN or infinite values")
        return array


def _check_header(name, found, dtype, shape, shapes, expected_dtype):
    if dtype.str not in ALLOWED_DTYPES:
        raise ValueError(f"its member {name!r} has dtype {dtype.str!r}; this format stores "
                         f"only {', '.join(ALLOWED_DTYPES)}")
    if expected_dtype is not None and dtype != np.dtype(expected_dtype):
        raise ValueError(f"its member {name!r} has dtype {dtype.str!r}, but "
                         f"{np.dtype(expected_dtype).str!r} was expected")
    if not (isinstance(found, tuple) and all(type(n) is int and n >= 0 for n in found)):
        raise ValueError(f"its member {name!r} has an invalid shape {found!r}")
    if shape is not None and found != tuple(shape):
        raise ValueError(f"its member {name!r} holds an array of shape {found}, but "
                         f"{tuple(shape)} was expected")
    if shapes is not None and found not in shapes:
        raise ValueError(f"its member {name!r} holds an array of shape {found}, which fits "
                         "none of the expected shapes")


def _read_exact(f, n, name):
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"its member {name!r} ends early")
    return data


def _read_to_end(f, n, name):
    """``n`` bytes, then the member's end (where zipfile checks the CRC-32)."""
    data = _read_exact(f, n, name)
    if f.read(1):
        raise ValueError(f"its member {name!r} is longer than it declares")
    return data


def _check_depth(value, name):
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"its member {name!r} is nested more than {MAX_JSON_DEPTH} "
                             "levels deep (MAX_JSON_DEPTH)")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _kind_name(kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({dict: "an object", list: "an array", str: "a string"}.get(
        k, k.__name__) for k in kinds)
