"""Files of this library: safe to write, checked before they are trusted.

Pure Python and numpy (no torch, no scikit-learn): :mod:`~msr_sklearn.persistence.archive`
writes zip archives of ``.npy`` arrays and JSON atomically and reads them with every
size, name, dtype and shape checked before anything is decompressed;
:mod:`~msr_sklearn.persistence.checkpoint` holds the training-state part of a checkpoint,
the lock that keeps two fits off one checkpoint, and the check of a checkpoint's location
before a fit starts; :mod:`~msr_sklearn.persistence.legacy` converts the symmetry files of
earlier formats.

Reading raises ``FileNotFoundError`` (no file), ``OSError`` (the system cannot read
it) or ``ValueError("cannot read a <what> from '<path>': ...")`` (anything about its
content); nothing else.
"""

from .archive import (ALLOWED_DTYPES, MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_MEMBER_BYTES,
                      MAX_MEMBERS, MAX_TOTAL_BYTES, ArchiveReader, npy_bytes, read_archive,
                      write_archive)
from .checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, TRAINING_MEMBERS,
                         check_checkpoint_location, checkpoint_file_kind, checkpoint_lock,
                         read_training_state, training_members)

__all__ = ["ALLOWED_DTYPES", "ArchiveReader", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION",
           "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_MEMBERS", "MAX_MEMBER_BYTES",
           "MAX_TOTAL_BYTES", "TRAINING_MEMBERS", "check_checkpoint_location",
           "checkpoint_file_kind", "checkpoint_lock", "npy_bytes", "read_archive",
           "read_training_state", "training_members", "write_archive"]
