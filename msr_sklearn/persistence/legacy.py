"""Format-1 and -2 LearnedSymmetry files, converted to format 3 on load.

Those files describe the network by the learner's old architecture flags (``layer``,
``hidden_layer_sizes``, a conv front-end of ``conv_channels``...), and their state by
the layer list of the old ``MetaNetwork`` (``layers.<i>.filters``, ``layers.<i>.bias``,
``layers.<i>.sharing.*``). Each old architecture is one of the built-in models with an
explicit per-parameter policy; this module maps the flags to it and renames the state
and the inner learning rates. Pure dictionaries and numpy: it builds nothing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["checked_v2_meta", "convert_v2"]

#: the keys of a version-1/2 ``meta.json``
_META_KEYS = {"format", "version", "architecture", "inner_lrs", "objective", "inner_steps",
              "arrays"}
#: the JSON types of the old architecture's settings: "int", "ints" (a list of int)...
_ARCHITECTURE_TYPES = {
    "n_features": "int", "n_outputs": "int", "kernel_size": "int", "n_copies": "int",
    "n_filters": "int or ints", "hidden_layer_sizes": "ints", "conv_channels": "ints",
    "input_shape": "null or ints", "layer": "str", "activation": "str", "conv_layer": "str",
    "pooling": "str", "conv_bias": "str", "bias": "bool", "couple_copies": "bool",
    "residual_pull": "bool"}
_LAYERS = ("msr", "msr_kron", "dense", "msr_residual", "msr_kron_residual", "conv1d",
           "locally_connected1d", "conv2d", "msr_conv2d", "msr_conv2d_residual")

#: the single-layer kinds of the old ``layer`` flag
_SINGLE = ("conv1d", "locally_connected1d", "conv2d", "msr_conv2d", "msr_conv2d_residual")
#: settings added after the first files, with the value those files meant
_OPTIONAL = {"couple_copies": False, "residual_pull": False, "conv_bias": "channels",
             "input_shape": None, "conv_channels": (), "pooling": "none",
             "conv_layer": "msr_conv2d", "n_copies": 1, "kernel_size": 3}


def checked_v2_meta(meta):
    """A version-1/2 ``meta.json`` whose keys and setting types are the old format's.

    Raises
    ------
    ValueError
        Naming the key or setting that is wrong.
    """
    if set(meta) != _META_KEYS:
        raise ValueError(f"its meta.json has the keys {sorted(meta)}; a version-"
                         f"{meta.get('version')} LearnedSymmetry file has {sorted(_META_KEYS)}")
    raw = meta["architecture"]
    if not isinstance(raw, dict):
        raise ValueError(f"its architecture is {type(raw).__name__}, not a JSON object")
    unknown = sorted(set(raw) - set(_ARCHITECTURE_TYPES))
    if unknown:
        raise ValueError(f"its architecture has unknown settings {unknown}")

    def is_int(v):
        return type(v) is int and 0 <= v < 2**31

    def fits(value, kind):
        return {"int": is_int(value), "str": isinstance(value, str),
                "bool": isinstance(value, bool), "null": value is None,
                "ints": isinstance(value, list) and all(map(is_int, value))}[kind]

    for key, value in raw.items():
        if not any(fits(value, kind) for kind in _ARCHITECTURE_TYPES[key].split(" or ")):
            raise ValueError(f"its architecture has {key}={value!r}, not of the type "
                             f"{_ARCHITECTURE_TYPES[key]}")
    missing = sorted(set(_ARCHITECTURE_TYPES) - set(_OPTIONAL) - set(raw))
    if missing:
        raise ValueError(f"its architecture lacks {missing}")
    if raw["layer"] not in _LAYERS:
        raise ValueError(f"its architecture has layer={raw['layer']!r}, not one of {_LAYERS}")
    if meta["objective"] not in ("regression", "classification"):
        raise ValueError(f"its objective {meta['objective']!r} is not regression or "
                         "classification")
    steps = meta["inner_steps"]
    if type(steps) is not int or steps < 1:
        raise ValueError(f"its inner_steps {steps!r} is not a positive integer")
    if not isinstance(meta["inner_lrs"], dict):
        raise ValueError("its inner learning rates are not a JSON object")
    return meta


def convert_v2(meta, state):
    """``(meta, state)`` of a format-1/2 file as format 3 (module, policy, new names).

    Raises
    ------
    ValueError
        If the architecture is not one the old flags could spell.
    """
    arch = {**_OPTIONAL, **meta["architecture"]}
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
    converter = _Converter(arch, state)
    if arch["layer"] in ("conv1d", "locally_connected1d"):
        module = converter.paper_1d()
    elif arch["layer"] in _SINGLE or arch["conv_channels"]:
        module = converter.convnet()
    else:
        module = converter.mlp()
    unknown = sorted(set(meta["inner_lrs"]) - set(converter.inner_names))
    if unknown:
        raise ValueError(f"it has inner learning rates of {unknown}, which its architecture "
                         "does not have")
    lrs = {converter.inner_names[old]: v for old, v in meta["inner_lrs"].items()}
    new_meta = {"module": module, "policy": converter.policy, "inner_lrs": lrs,
                "objective": meta["objective"], "inner_steps": meta["inner_steps"],
                "input_shape": [int(arch["n_features"])], "n_outputs": int(arch["n_outputs"]),
                "feature_names": None}
    leftover = set(state) - converter.used
    if leftover:
        raise ValueError(f"its state has arrays the architecture does not use: {sorted(leftover)}")
    return new_meta, converter.state


class _Converter:
    """Renames an old network's state layer by layer into a built-in model's policy."""

    def __init__(self, arch, old_state):
        self.arch, self.old = arch, old_state
        self.state, self.policy, self.inner_names, self.used = {}, {}, {}, set()

    def _take(self, key):
        if key not in self.old:
            raise ValueError(f"its state lacks the array {key!r} its architecture needs")
        self.used.add(key)
        return np.asarray(self.old[key])

    def _has(self, key):
        return key in self.old

    def layer(self, i, param, sharing_kind, shape, sharing_config=None, bias_param=None,
              residual=False, pull=False):
        """Old layer ``i`` becomes parameter ``param`` (weight ``shape``) and its bias."""
        old = f"layers.{i}"
        if sharing_kind is None:  # the identity sharing: the weight is adapted as is
            self.policy[param] = "inner"
            self.state[f"module.{param}"] = self._take(f"{old}.filters").reshape(shape)
            self.inner_names[f"{i}.filters"] = param
        else:
            key = "shared." + param.replace(".", "-")
            spec = {"kind": sharing_kind, **(sharing_config or {})}
            prefix = f"{key}.sharing"
            if residual:
                spec = {"kind": "Residual", "sharing": spec, "inner_lr": None, "pull": pull}
                prefix = f"{key}.sharing.sharing"
                self.state[f"{key}.residual"] = self._take(f"{old}.residual")
                self.inner_names[f"{i}.residual"] = f"{param}.residual"
                if pull:
                    self.state[f"{key}.sharing.log_pull"] = self._take(f"{old}.log_pull")
            self.policy[param] = spec
            for name in [k for k in self.old if k.startswith(f"{old}.sharing.")]:
                self.state[prefix + name[len(f"{old}.sharing"):]] = self._take(name)
            self.state[f"{key}.filters"] = self._take(f"{old}.filters")
            self.inner_names[f"{i}.filters"] = f"{param}.filters"
        if bias_param is not None and self._has(f"{old}.bias"):
            self.policy[bias_param] = "inner"
            self.state[f"module.{bias_param}"] = self._take(f"{old}.bias")
            self.inner_names[f"{i}.bias"] = bias_param

    def linear_kind(self, i, n_out, n_in):
        """The sharing kind and config of old linear layer ``i`` under ``layer``."""
        kind = self.arch["layer"].removesuffix("_residual")
        if kind == "msr":
            k = self.old[f"layers.{i}.filters"].shape[0]
            return "DenseSharing", {"n_filters": int(k), "learnable": True}
        if kind == "msr_kron":
            factors = [int(self.old[f"layers.{i}.sharing.factors.{j}"].shape[1]) for j in (0, 1)]
            return "KroneckerSharing", {"factor_filters": factors, "n_filters": None,
                                        "init": "random", "learnable": True}
        return None, None

    def head(self, prefix, first_layer, n_in):
        """The old linear layers from ``first_layer`` on, as an MLP under ``prefix``."""
        arch = self.arch
        sizes = [n_in, *arch["hidden_layer_sizes"], arch["n_outputs"]]
        residual = arch["layer"].endswith("_residual")
        for j, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            kind, config = self.linear_kind(first_layer + j, b, a)
            self.layer(first_layer + j, f"{prefix}{2 * j}.weight", kind, (b, a), config,
                       f"{prefix}{2 * j}.bias", residual=residual and kind is not None,
                       pull=arch["residual_pull"])

    def mlp(self):
        arch = self.arch
        self.head("", 0, arch["n_features"])
        return {"kind": "builtin", "name": "MLP", "params": {
            "n_features": arch["n_features"], "n_outputs": arch["n_outputs"],
            "hidden_layer_sizes": list(arch["hidden_layer_sizes"]),
            "activation": arch["activation"], "bias": arch["bias"]}}

    def paper_1d(self):
        arch = self.arch
        k, n = arch["kernel_size"], arch["n_features"]
        if arch["layer"] == "conv1d":
            self.layer(0, "conv.weight", None, (1, 1, k), bias_param="conv.bias")
            name = "Conv1dLayer"
        else:
            self.layer(0, "weight", None, (n - k + 1, k), bias_param="bias")
            name = "LocallyConnected1d"
        return {"kind": "builtin", "name": name,
                "params": {"n_features": n, "kernel_size": k, "bias": arch["bias"]}}

    def convnet(self):
        arch = self.arch
        single = arch["layer"] in _SINGLE
        c, h, w = arch["input_shape"] or (1,) + (int(round(arch["n_features"] ** 0.5)),) * 2
        k, copies = arch["kernel_size"], arch["n_copies"]
        if single:
            pixels = (h - k + 1) * (w - k + 1)
            channels, conv_kind = (arch["n_outputs"] // pixels,), arch["layer"]
            field_bias = couple = False
        else:
            channels, conv_kind = tuple(arch["conv_channels"]), arch["conv_layer"]
            field_bias, couple = arch["conv_bias"] == "fields", arch["couple_copies"]
        index = 0  # position in the ConvNet's features: conv, [field bias], activation
        c_in = c
        for i, c_out in enumerate(channels):
            weight = f"features.{index}.weight"
            bias = f"features.{index + 1}.bias" if field_bias else f"features.{index}.bias"
            if conv_kind == "conv2d":
                self.layer(i, weight, None, (c_out, c_in, k, k), bias_param=bias)
            else:
                in_copies = copies if couple and i else 1
                factors = [int(self.old[f"layers.{i}.sharing.factors.{j}"].shape[1])
                           for j in range(3)]
                config = {"n_copies": copies, "in_copies": in_copies, "factor_filters": factors,
                          "init": "random", "learnable": True}
                self.layer(i, weight, "ConvFilterSharing", None, config, bias,
                           residual=conv_kind.endswith("_residual"), pull=arch["residual_pull"])
            index += 2 + int(field_bias)  # conv, [field bias], activation
            c_in = c_out
        params = {"input_shape": [c, h, w], "n_outputs": None if single else arch["n_outputs"],
                  "channels": list(channels), "kernel_size": k, "global_pool": arch["pooling"],
                  "hidden_layer_sizes": list(arch["hidden_layer_sizes"]),
                  "activation": arch["activation"], "bias": arch["bias"],
                  "field_bias": field_bias, "n_copies": copies, "couple_copies": couple}
        if not single:
            n_in = {"none": channels[-1] * (h - len(channels) * (k - 1)) *
                    (w - len(channels) * (k - 1)),
                    "mean": channels[-1], "mean_fields": channels[-1] // copies}[arch["pooling"]]
            self.head("head.", len(channels) + (arch["pooling"] != "none"), n_in)
        return {"kind": "builtin", "name": "ConvNet", "params": params}
