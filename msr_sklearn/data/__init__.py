"""The data layer: tasks (validation, padding, support/query splits, meta-batches),
task streams and how scikit-learn's metadata (task ids, sample weights) reach them.

Import the modules themselves (:mod:`msr_sklearn.data.tasks`,
:mod:`msr_sklearn.data.streams`, :mod:`msr_sklearn.data.routing`); this package's
``__init__`` imports nothing, so the engine can use the data types without importing
scikit-learn.
"""
