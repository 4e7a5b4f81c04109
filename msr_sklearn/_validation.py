"""Parameter validation for msr_sklearn's estimators, built on scikit-learn's helpers.

scikit-learn's constraint objects (``Interval``, ``StrOptions``...) and the checker
that reads an estimator's ``_parameter_constraints`` table live in the private module
``sklearn.utils._param_validation``, and its ``_fit_context`` decorator in
``sklearn.base``. Private API may change in any release, so this module is the only
place in msr_sklearn that imports them: a future scikit-learn change is fixed here.

Estimators declare ``_parameter_constraints`` (a dict ``name -> list of
constraints``, scikit-learn's format) and either call :func:`validate_parameters`
at the start of ``fit`` or decorate ``fit`` with :func:`fit_context`.
"""

from __future__ import annotations

import functools

from sklearn import config_context, get_config
from sklearn.utils._param_validation import (  # the one import of the private helpers
    HasMethods,
    Hidden,
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_parameter_constraints,
)
from sklearn.utils.validation import _check_sample_weight

__all__ = [
    "HasMethods",
    "Hidden",
    "Interval",
    "InvalidParameterError",
    "StrOptions",
    "check_device",
    "check_sample_weight",
    "fit_context",
    "validate_parameters",
]


def validate_parameters(estimator):
    """Check ``estimator.get_params(deep=False)`` against its ``_parameter_constraints``.

    Raises :class:`InvalidParameterError` (a ``ValueError`` and ``TypeError``) naming
    the parameter, the value and the accepted values.
    """
    validate_parameter_constraints(
        estimator._parameter_constraints,
        estimator.get_params(deep=False),
        caller_name=type(estimator).__name__,
    )


def fit_context(fit_method):
    """Decorate ``fit``: validate the parameters first, as scikit-learn's ``_fit_context``.

    Validation is skipped where the user turned it off globally
    (``sklearn.set_config(skip_parameter_validation=True)``); scikit-learn functions
    called inside ``fit`` skip re-validating what they are given (the estimator
    passes them only values it built itself).
    """

    @functools.wraps(fit_method)
    def wrapper(estimator, *args, **kwargs):
        skip = get_config()["skip_parameter_validation"]
        if not skip:
            validate_parameters(estimator)
        with config_context(skip_parameter_validation=True):
            return fit_method(estimator, *args, **kwargs)

    return wrapper


def check_device(device):
    """A ``torch.device`` for ``device``, with a clear ``ValueError`` when it is unusable.

    Estimators call this at ``fit`` (never in ``__init__``), so a ``device="cuda"``
    estimator can still be built, cloned and pickled on a machine without CUDA.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a valid torch device") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but CUDA is not available on "
                             "this machine (torch.cuda.is_available() is False); use "
                             "device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} was requested but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was requested but MPS is not available")
    return dev


def check_sample_weight(sample_weight, X, dtype=None):
    """``sample_weight`` as a C-contiguous array of shape ``(n_samples,)``, or ``None``.

    scikit-learn's checks: shape, numeric, finite, non-negative, not all 0 (a weighted
    mean loss needs a positive total); a scalar is repeated over the rows. ``None``
    stays ``None``.
    """
    import numpy as np

    if sample_weight is None:
        return None
    return np.ascontiguousarray(
        _check_sample_weight(sample_weight, X, dtype=dtype, ensure_non_negative=True))
