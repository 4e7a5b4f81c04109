"""A feed-forward network of :class:`MetaLayer` s, and a builder for the usual ones."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .layers import (
    GlobalMeanPool,
    LocallyConnected1d,
    MetaLayer,
    SharedConv2d,
    SharedLinear,
    conv1d,
)
from .sharing import ConvFilterSharing, DenseSharing, FixedSharing, KroneckerSharing

ACTIVATIONS = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "logistic": nn.Sigmoid,
}

#: the ``layer`` kinds :func:`build_network` understands
LAYER_KINDS = ("msr", "msr_kron", "dense", "conv1d", "locally_connected1d", "conv2d",
               "msr_conv2d", "msr_residual", "msr_kron_residual", "msr_conv2d_residual")
#: kinds that build one fixed-shape layer mapping the input straight to the outputs
SINGLE_LAYER_KINDS = ("conv1d", "locally_connected1d", "conv2d", "msr_conv2d",
                      "msr_conv2d_residual")
#: the kinds of the convolutional front-end (``conv_layer``)
CONV_LAYER_KINDS = ("msr_conv2d", "conv2d", "msr_conv2d_residual")
#: the suffix of the soft-symmetry kinds: ``W = reshape(U v) + R``
RESIDUAL_SUFFIX = "_residual"
#: the ``pooling`` options after a convolutional front-end
POOLINGS = ("none", "mean", "mean_fields")
#: the front-end's biases: one per output channel, or one per field of copies
CONV_BIASES = ("channels", "fields")
#: how the MSR-Conv front-end's sharings start (``ConvFilterSharing``'s ``init``)
CONV_INITS = ("identity", "random")


class MetaNetwork(nn.Module):
    """Layers with an activation after every :class:`MetaLayer` but the last.

    Parameter-free modules (e.g. :class:`GlobalMeanPool`) may sit between layers.
    Inner parameters are addressed as ``"{layer index}.{name}"``, e.g. ``"0.filters"``.
    ``forward(x)`` uses the network's own parameters (the meta-learned initial ones);
    ``forward(x, inner)`` substitutes per-task inner parameters with a leading task
    dimension and expects ``x`` of shape ``(n_tasks, n_samples, n_features)``.
    Every other parameter (the sharings' ``U``) is outer; see
    :meth:`initial_inner_parameters` and :meth:`outer_parameters`.
    :func:`build_network` builds the usual networks.

    Parameters
    ----------
    layers : sequence of MetaLayer
        The layers, in order, each taking the previous one's flat output; parameter-free
        modules such as :class:`GlobalMeanPool` may sit between them.
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
        Applied after every :class:`MetaLayer` but the last (not after the
        parameter-free modules).

    Examples
    --------
    >>> import torch
    >>> from msr_sklearn.nn import build_network
    >>> net = build_network(5, 2, hidden_layer_sizes=(8,), layer="msr", n_filters=4)
    >>> sorted(net.initial_inner_parameters())
    ['0.bias', '0.filters', '1.bias', '1.filters']
    >>> net(torch.randn(3, 5)).shape
    torch.Size([3, 2])
    """

    def __init__(self, layers: Sequence[MetaLayer], activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}"
            )
        self.layers = nn.ModuleList(layers)
        self.activation = activation
        self._act = ACTIVATIONS[activation]()

    @property
    def in_features(self):
        return self.layers[0].in_features

    @property
    def out_features(self):
        return self.layers[-1].out_features

    def initial_inner_parameters(self) -> dict[str, nn.Parameter]:
        """The inner parameters' initial values (``v0`` and biases), by name."""
        out = {}
        for i, layer in enumerate(self.layers):
            for name in getattr(layer, "inner_parameters", ()):
                p = getattr(layer, name)
                if p is not None:
                    out[f"{i}.{name}"] = p
        return out

    def inner_penalty(self, inner, initial=None):
        """The layers' inner penalties ``sum_l exp(log_pull_l) ||R_l - R0_l||^2``, or None.

        Parameters
        ----------
        inner : dict of str to Tensor
            Inner parameters by name (``"0.residual"``...), with or without a leading
            task dimension.
        initial : dict of str to Tensor or None, default=None
            The values the residuals are pulled towards; ``None``: the network's own
            (the meta-learned ``R0``).

        Returns
        -------
        Tensor of shape (T,) (or () without a task dimension), or None
            ``None`` when no layer has a pull (``residual_pull=False``).
        """
        initial = self.initial_inner_parameters() if initial is None else initial
        total = None
        for i, layer in enumerate(self.layers):
            name = f"{i}.residual"
            if getattr(layer, "log_pull", None) is None or name not in inner:
                continue
            term = layer.inner_penalty(inner[name], initial[name])
            total = term if total is None else total + term
        return total

    def outer_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters that only the outer loop changes (the sharings' ``U``)."""
        inner = {id(p) for p in self.initial_inner_parameters().values()}
        return {n: p for n, p in self.named_parameters() if id(p) not in inner}

    @property
    def meta_layers(self):
        """The :class:`MetaLayer` s, in order (what ``layer=i`` refers to elsewhere)."""
        return [m for m in self.layers if isinstance(m, MetaLayer)]

    @contextlib.contextmanager
    def holding_sharings(self, enabled=True):
        """Within the block, every layer's weight holds ``U`` constant in its read.

        Each :class:`MetaLayer` builds ``U v`` with :meth:`Sharing.held_weight`: the
        same values and the same derivatives w.r.t. ``U``, but a gradient w.r.t. the
        filters taken inside reads through a detached ``U``. The inner loop's support
        passes run in it for ``symmetry_gradient="first_order"``.

        Parameters
        ----------
        enabled : bool, default=True
            ``False`` makes the block a no-op (for a conditional ``with``).

        Examples
        --------
        >>> import torch
        >>> from msr_sklearn.nn import build_network
        >>> net = build_network(4, 2, n_filters=3, random_state=0)
        >>> x = torch.randn(5, 4)
        >>> with net.holding_sharings():
        ...     held = net(x)
        >>> torch.equal(held, net(x))
        True
        """
        layers = self.meta_layers if enabled else []
        for layer in layers:
            layer._holding_sharing = True
        try:
            yield self
        finally:
            for layer in layers:
                layer._holding_sharing = False

    def forward(self, x, inner: Mapping[str, torch.Tensor] | None = None):
        last = max(i for i, m in enumerate(self.layers) if isinstance(m, MetaLayer))
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, MetaLayer):
                x = layer(x)
                continue
            kwargs = {}
            if inner is not None:
                kwargs = {n: inner[f"{i}.{n}"] for n in layer.inner_parameters
                          if f"{i}.{n}" in inner}
            x = layer(x, **kwargs)
            if i != last:
                x = self._act(x)
        return x

    def extra_repr(self):
        return f"activation={self.activation!r}"


def _linear_sharing(kind, n_out, n_in, n_filters, generator):
    kind = kind.removesuffix(RESIDUAL_SUFFIX)
    if kind == "msr":
        return DenseSharing((n_out, n_in), n_filters, generator=generator)
    if kind == "msr_kron":
        return KroneckerSharing((n_out, n_in), _kron_factor_sizes(n_filters, n_out, n_in),
                                generator=generator)
    return FixedSharing((n_out, n_in))


def _kron_factor_sizes(n_filters, n_out, n_in):
    """Split k into (k_out, k_in) with k_out * k_in == k, as balanced as the layer allows."""
    best = None
    for k_out in range(1, n_filters + 1):
        if n_filters % k_out:
            continue
        k_in = n_filters // k_out
        if k_out > n_out or k_in > n_in:
            continue
        score = abs(k_out - k_in)
        if best is None or score < best[0]:
            best = (score, (k_out, k_in))
    if best is None:
        raise ValueError(
            f"n_filters={n_filters} cannot be split into k_out * k_in with k_out <= {n_out} "
            f"and k_in <= {n_in} for a Kronecker-factored layer {n_in}->{n_out}"
        )
    return best[1]


def build_network(n_features, n_outputs, hidden_layer_sizes=(), layer="msr", n_filters=8,
                  activation="relu", bias=True, kernel_size=3, input_shape=None, n_copies=1,
                  conv_channels=(), conv_layer="msr_conv2d", pooling="none",
                  couple_copies=False, residual_pull=False, conv_bias="channels",
                  conv_init="identity", random_state=None):
    """Build a :class:`MetaNetwork` from sklearn-style settings.

    Parameters
    ----------
    n_features, n_outputs : int
    hidden_layer_sizes : tuple of int
        Widths of the hidden layers (``()``: a single layer).
    layer : {"msr", "msr_kron", "dense", "conv1d", "locally_connected1d", "conv2d", \
"msr_conv2d", "msr_residual", "msr_kron_residual", "msr_conv2d_residual"}
        ``"msr"``: learned dense ``U``; ``"msr_kron"``: learned Kronecker ``U``;
        ``"dense"``: identity ``U`` (plain MAML). The others build one layer mapping
        the input straight to the outputs (no hidden layers): ``"conv1d"`` and
        ``"locally_connected1d"`` are the paper's single-channel 1-D baselines;
        ``"conv2d"`` is a plain 2-D convolution (MAML-Conv) and ``"msr_conv2d"`` a
        convolution whose filter tensor is reparameterized by a learned
        :class:`ConvFilterSharing` (MSR-Conv). All are valid, stride 1, with
        ``kernel_size`` taps per axis; the 2-D ones read images of ``input_shape`` and
        infer the output channels from ``n_outputs``. A ``"_residual"`` kind is the
        kind without the suffix plus a free inner weight ``R`` beside ``U v`` in
        every layer (soft symmetry, ``W = reshape(U v) + R``; see :class:`MetaLayer`).
    n_filters : int or sequence of int
        ``k`` per MSR layer (one value for all, or one per layer). Not used by the
        single-layer kinds (MSR-Conv's ``k`` is one ``kernel_size²`` filter per field).
    activation : {"relu", "tanh", "logistic", "identity"}
        Between layers (none after the last).
    bias : bool
        Per-layer biases (inner parameters, not reparameterized).
    kernel_size : int
        Taps per axis of the convolutional kinds.
    input_shape : tuple (C, H, W) or None
        Image shape for the 2-D kinds; ``None`` means one square channel.
    n_copies : int
        MSR-Conv: output channels per field, e.g. 4 for the copies of a filter under
        90° rotations.
    conv_channels : tuple of int
        A convolutional front-end before the dense layers: one valid ``kernel_size``
        convolution per entry, with that many output channels, on images of
        ``input_shape``.
    conv_layer : {"msr_conv2d", "conv2d", "msr_conv2d_residual"}
        Front-end convolutions with a learned sharing of their filter tensors
        (MSR-Conv, ``n_copies`` channels per field), plain ones (MAML), or MSR-Conv
        with free per-copy filters ``R`` beside the shared ones (soft symmetry).
    pooling : {"none", "mean", "mean_fields"}
        ``"mean"`` averages each front-end channel over its pixels; ``"mean_fields"``
        averages each field (``n_copies`` consecutive channels) over its copies and
        pixels, so the features do not change when a field's copies are permuted: after
        an equivariant front-end with regular fields (e.g. a lifting and a group
        convolution, :func:`msr_sklearn.groups.exact_group_conv_sharing`) any head is
        invariant. ``n_copies`` must divide the last front-end layer's channels.
    couple_copies : bool
        MSR-Conv front-end: every layer after the first reads its input in fields of
        ``n_copies`` channels, so its sharing can couple input and output copies (as a
        group convolution between regular fields does; see
        :class:`ConvFilterSharing`'s ``in_copies``). ``False``: each input channel is
        a field of its own.
    residual_pull : bool
        Every residual layer adds a meta-learned pull ``exp(log_pull) ||R - R0||^2``
        (initial weight 1) to the inner loop's support loss. Needs a ``"_residual"``
        ``layer`` or ``conv_layer`` (with ``conv_channels``); else a ``ValueError``.
    conv_bias : {"channels", "fields"}
        With ``bias``, the front-end convolutions have one bias per output channel, or
        one per field of ``n_copies`` channels, shared by its copies
        (:class:`SharedConv2d`'s ``bias_copies``): a group convolution between regular
        fields stays equivariant only with tied biases.
    conv_init : {"identity", "random"}
        How the MSR-Conv front-end's sharings start (:class:`ConvFilterSharing`'s
        ``init``): ``"identity"``, every copy of a field equal; ``"random"``, random
        orthonormal factors, so the copies start different. With identity factors the
        copies stay equal when nothing downstream tells them apart (e.g.
        ``pooling="mean_fields"``): their meta-gradients are equal too.
    random_state : int, torch.Generator or None

    Returns
    -------
    MetaNetwork

    Examples
    --------
    >>> from msr_sklearn.nn import build_network
    >>> net = build_network(70, 68, layer="msr", n_filters=3, bias=False, random_state=0)
    >>> net.layers[0].sharing.matrix().shape
    torch.Size([4760, 3])
    >>> build_network(49, 8 * 25, layer="msr_conv2d", n_copies=4).layers[0].output_shape
    (8, 5, 5)
    >>> pooled = build_network(64, 5, conv_channels=(16,), n_copies=8, pooling="mean_fields",
    ...                        input_shape=(1, 8, 8))
    >>> pooled.layers[-1].sharing.weight_shape   # the head reads one mean per field
    (5, 2)
    >>> soft = build_network(20, 18, layer="msr_residual", n_filters=3, residual_pull=True)
    >>> sorted(soft.initial_inner_parameters())
    ['0.bias', '0.filters', '0.residual']
    """
    if layer not in LAYER_KINDS:
        raise ValueError(f"layer must be one of {LAYER_KINDS}; got {layer!r}")
    if conv_layer not in CONV_LAYER_KINDS:
        raise ValueError(f"conv_layer must be one of {CONV_LAYER_KINDS}; got {conv_layer!r}")
    soft = _soft_kinds(layer, conv_layer, conv_channels, residual_pull)
    generator = _as_generator(random_state)
    if layer in SINGLE_LAYER_KINDS:
        if tuple(hidden_layer_sizes) or tuple(conv_channels):
            raise ValueError(f"layer={layer!r} builds a single layer; hidden_layer_sizes and "
                             "conv_channels must be ()")
        net_layer = _single_layer(layer, n_features, n_outputs, bias, kernel_size, input_shape,
                                  n_copies, generator, soft)
        return _small_output_init(MetaNetwork([net_layer], activation), generator)
    if conv_bias not in CONV_BIASES:
        raise ValueError(f"conv_bias must be one of {CONV_BIASES}; got {conv_bias!r}")
    if conv_init not in CONV_INITS:
        raise ValueError(f"conv_init must be one of {CONV_INITS}; got {conv_init!r}")
    bias_copies = n_copies if conv_bias == "fields" else 1
    front = _conv_front_end(n_features, conv_channels, conv_layer, pooling, bias, kernel_size,
                            input_shape, n_copies, couple_copies, generator, soft, bias_copies,
                            conv_init)
    n_in = front[-1].out_features if front else int(n_features)
    sizes = [n_in, *(int(h) for h in hidden_layer_sizes), int(n_outputs)]
    n_layers = len(sizes) - 1
    ks = [int(n_filters)] * n_layers if _is_int(n_filters) else [int(k) for k in n_filters]
    if len(ks) != n_layers:
        raise ValueError(f"n_filters has {len(ks)} entries for {n_layers} layers")
    linear_soft = soft if layer.endswith(RESIDUAL_SUFFIX) else {}
    layers = [
        SharedLinear(_linear_sharing(layer, n_out, n_in, k, generator), bias=bias,
                     generator=generator, **linear_soft)
        for n_in, n_out, k in zip(sizes[:-1], sizes[1:], ks)
    ]
    return _small_output_init(MetaNetwork(front + layers, activation), generator)


def _soft_kinds(layer, conv_layer, conv_channels, residual_pull):
    """The layer keywords of a residual kind; ``residual_pull`` needs one to act on."""
    residual = layer.endswith(RESIDUAL_SUFFIX) or (
        conv_layer.endswith(RESIDUAL_SUFFIX) and bool(tuple(conv_channels))
        and layer not in SINGLE_LAYER_KINDS)
    if residual_pull and not residual:
        raise ValueError(
            f"residual_pull=True acts on residual layers, but layer={layer!r} with "
            f"conv_layer={conv_layer!r} and conv_channels={tuple(conv_channels)} has none; "
            "use layer='msr_residual', 'msr_kron_residual' or 'msr_conv2d_residual', or "
            "conv_layer='msr_conv2d_residual' with conv_channels")
    return {"residual": True, "pull": bool(residual_pull)}


def _conv_front_end(n_features, conv_channels, conv_layer, pooling, bias, kernel_size,
                    input_shape, n_copies, couple_copies, generator, soft, bias_copies=1,
                    conv_init="identity"):
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
    conv_channels = tuple(int(c) for c in conv_channels)
    if not conv_channels:
        return []
    shape = _image_shape(n_features, input_shape)
    modules = []
    for i, c_out in enumerate(conv_channels):
        c_in, h, w = shape
        if kernel_size > min(h, w):
            raise ValueError(f"conv_channels={conv_channels} with kernel_size={kernel_size} "
                             f"shrinks the {input_shape or 'input'} image below the kernel")
        if conv_layer == "conv2d":
            sharing = FixedSharing((c_out, c_in, kernel_size, kernel_size))
        else:
            if c_out % n_copies:
                raise ValueError(f"n_copies={n_copies} must divide every entry of "
                                 f"conv_channels={conv_channels}")
            # the image's channels are plain fields; later inputs are the copies before
            in_copies = n_copies if couple_copies and i > 0 else 1
            sharing = ConvFilterSharing(c_out // n_copies, c_in, kernel_size, n_copies=n_copies,
                                        in_copies=in_copies, init=conv_init,
                                        generator=generator)
        conv = SharedConv2d(shape, sharing, bias=bias, generator=generator,
                            bias_copies=bias_copies,
                            **(soft if conv_layer.endswith(RESIDUAL_SUFFIX) else {}))
        modules.append(conv)
        shape = conv.output_shape
    if pooling == "mean":
        modules.append(GlobalMeanPool(shape[0]))
    elif pooling == "mean_fields":
        if shape[0] % n_copies:
            raise ValueError(f"pooling='mean_fields' averages fields of n_copies={n_copies} "
                             f"channels; the last front-end layer has {shape[0]}")
        # channel-major (field, copy, pixel): one mean per field over copies and pixels
        modules.append(GlobalMeanPool(shape[0] // n_copies))
    return modules


def _single_layer(layer, n_features, n_outputs, bias, kernel_size, input_shape, n_copies,
                  generator, soft):
    if layer in ("conv1d", "locally_connected1d"):
        if n_outputs != n_features - kernel_size + 1:
            raise ValueError(
                f"a valid 1-D convolution with kernel_size={kernel_size} maps {n_features} "
                f"features to {n_features - kernel_size + 1} outputs; got n_outputs={n_outputs}")
        if layer == "conv1d":
            return conv1d(1, 1, n_features, kernel_size, bias=bias, generator=generator)
        return LocallyConnected1d(1, 1, n_features, kernel_size, bias=bias, generator=generator)
    c_in, h, w = _image_shape(n_features, input_shape)
    pixels = (h - kernel_size + 1) * (w - kernel_size + 1)
    if pixels < 1 or n_outputs % pixels:
        raise ValueError(
            f"a valid {kernel_size}x{kernel_size} convolution of {h}x{w} images gives "
            f"{max(pixels, 0)} pixels per channel; n_outputs={n_outputs} is not a multiple")
    c_out = n_outputs // pixels
    if layer == "conv2d":
        sharing = FixedSharing((c_out, c_in, kernel_size, kernel_size))
    else:
        if c_out % n_copies:
            raise ValueError(f"n_copies={n_copies} must divide the {c_out} output channels")
        sharing = ConvFilterSharing(c_out // n_copies, c_in, kernel_size, n_copies=n_copies,
                                    generator=generator)
    return SharedConv2d((c_in, h, w), sharing, bias=bias, generator=generator,
                        **(soft if layer.endswith(RESIDUAL_SUFFIX) else {}))


def _image_shape(n_features, input_shape):
    if input_shape is None:
        side = int(round(n_features ** 0.5))
        if side * side != n_features:
            raise ValueError(f"{n_features} features are not a square image; pass "
                             "input_shape=(channels, height, width)")
        return 1, side, side
    c, h, w = (int(s) for s in input_shape)
    if c * h * w != n_features:
        raise ValueError(f"input_shape={tuple(input_shape)} has {c * h * w} values but the "
                         f"data have {n_features} features")
    return c, h, w


def _small_output_init(network, generator):
    last = network.layers[-1]
    last.reset_parameters(generator, filter_std=1.0 / last.out_features)
    return network


def _is_int(x):
    return isinstance(x, int) or (hasattr(x, "__index__") and not hasattr(x, "__len__"))


def _as_generator(random_state):
    if isinstance(random_state, torch.Generator):
        return random_state
    g = torch.Generator()
    if random_state is None:
        g.seed()
    else:
        g.manual_seed(int(random_state))
    return g
