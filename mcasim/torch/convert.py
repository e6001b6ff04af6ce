"""``convert_to_analog``: every supported layer of a torch model replaced by its analog twin.

Supported: ``nn.Linear``, ``nn.Conv2d`` (square kernel, equal strides, symmetric zero padding,
groups 1, dilation 1), ``nn.LSTM`` (one layer, unidirectional, no projection). Layers that hold a
weight matrix but have no analog twin (other convolutions, GRU/RNN, embeddings, attention, an
LSTM of several layers, ...) are *unsupported*: left digital with a warning that names them
(``unsupported="leave"``) or refused (``"error"``). Everything else (activations, pooling,
BatchNorm, LayerNorm, dropout) stays as it is: digital.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from sim.config import Config
from .config import config_backend, resolve_config
from .layers import AnalogConv2d, AnalogLinear, AnalogLSTM, AnalogModule

UNSUPPORTED_TYPES = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                     nn.RNNBase, nn.RNNCellBase, nn.Embedding, nn.EmbeddingBag, nn.MultiheadAttention,
                     nn.Bilinear)


class ConvertError(ValueError):
    """A model that cannot be converted as asked."""


class UnsupportedLayerWarning(UserWarning):
    """A layer with weights that has no analog twin was left digital."""


def _why_unsupported(m: nn.Module) -> str | None:
    """None where ``m`` has an analog twin, else the reason it has none."""
    if isinstance(m, nn.Conv2d):
        k, s, p = m.kernel_size, m.stride, m.padding
        if m.groups != 1:
            return f"groups={m.groups} (only groups=1)"
        if m.dilation != (1, 1):
            return f"dilation={m.dilation} (only 1)"
        if k[0] != k[1] or s[0] != s[1]:
            return f"kernel {k} / stride {s} (only square kernels and equal strides)"
        if isinstance(p, str) or p[0] != p[1]:
            return f"padding={p!r} (only symmetric integer padding)"
        if m.padding_mode != "zeros":
            return f"padding_mode={m.padding_mode!r} (only zeros)"
        return None
    if isinstance(m, nn.LSTM):
        if m.num_layers != 1:
            return f"num_layers={m.num_layers} (one layer per AnalogLSTM: stack them)"
        if m.bidirectional:
            return "bidirectional (only unidirectional)"
        if m.proj_size:
            return f"proj_size={m.proj_size} (no projection)"
        return None
    if isinstance(m, nn.Linear):
        return None
    if isinstance(m, UNSUPPORTED_TYPES):
        return f"{type(m).__name__} has no analog twin"
    return None


def _candidates(model: nn.Module):
    """(qualified name, module, reason or None) of every weight layer, in module order; the
    children of an unsupported layer are not visited (attention's out_proj is not called as a module)."""
    out = []

    def walk(mod, prefix):
        for name, child in list(mod._modules.items()):     # every name, a shared module too
            if child is None:
                continue
            q = f"{prefix}.{name}" if prefix else name
            if isinstance(child, AnalogModule):
                continue
            why = _why_unsupported(child)
            if isinstance(child, (nn.Linear, nn.Conv2d, nn.LSTM)) or why is not None:
                out.append((q, child, why))
                continue
            walk(child, q)

    walk(model, "")
    return out


def _twin(m: nn.Module, config, backend, i: int, n: int) -> AnalogModule:
    kw = dict(config=config, backend=backend, layer_index=i, n_layers=n)
    if isinstance(m, nn.Linear):
        a = AnalogLinear(m.in_features, m.out_features, bias=m.bias is not None, w0=m.weight.detach().numpy(), **kw)
    elif isinstance(m, nn.Conv2d):
        a = AnalogConv2d(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0],
                         bias=m.bias is not None, w0=m.weight.detach(), **kw)
    else:
        w0 = torch.cat([m.weight_ih_l0, m.weight_hh_l0], dim=1).detach().numpy()
        b0 = (m.bias_ih_l0 + m.bias_hh_l0).detach() if m.bias else torch.zeros(4 * m.hidden_size)
        a = AnalogLSTM(m.input_size, m.hidden_size, batch_first=m.batch_first, w0=w0, bias0=b0, **kw)
        if not m.bias:
            a.bias.requires_grad_(False)
    if getattr(a, "bias", None) is not None and not isinstance(m, nn.LSTM):
        with torch.no_grad():
            a.bias.copy_(m.bias)
    a.train(m.training)
    return a


def _check_per_layer(cfg: Config, names: list[str], n: int) -> None:
    """Per-layer config lists must have one value or one per converted layer: say which layers."""
    lists = [(f"synapse.{k}", getattr(cfg.synapse, k)) for k in ("w_max", "epsilon_uS")]
    lists += [(f"tile.{k}", v) for k, v in cfg.tile.items()]
    for key, v in lists:
        if isinstance(v, (list, tuple)) and len(v) not in (1, n):
            raise ConvertError(f"{key} has {len(v)} values but {n} layers are converted "
                               f"({', '.join(names)}): give one value, or one per converted layer in that order")


def convert_to_analog(model: nn.Module, config, *, skip=(), unsupported: str = "leave", backend=None,
                      inplace: bool = False) -> nn.Module:
    """``model`` with every supported layer replaced by its analog twin (a copy unless ``inplace``).

    ``config``: the CLI's config (``sim.config.Config``, a TOML path or dict; per-layer
    ``synapse.w_max`` / ``epsilon_uS`` / ``[tile]`` lists have one value per *converted* layer, in
    module order) or one :class:`~gpu_model.tile_config.TileConfig` for every layer. ``skip``:
    layers kept digital: ``"first"``, ``"last"`` and/or qualified module names (``"features.0"``).
    ``unsupported``: ``"leave"`` (digital, with a warning naming them) or ``"error"``. ``backend``:
    "numpy" (default), "cupy" or a :class:`gpu_model.backend.Backend` (seeded with ``train.seed``).
    Each twin starts from the layer's current weights (clipped to the devices' range, programmed).
    """
    if unsupported not in ("leave", "error"):
        raise ConvertError(f"unsupported must be 'leave' or 'error', got {unsupported!r}")
    skip = (skip,) if isinstance(skip, str) else tuple(skip)
    cfg = resolve_config(config)
    if isinstance(cfg, Config) and cfg.synapse.mode not in ("fp32", "ideal", "pcm"):
        raise ConvertError(f"synapse.mode must be fp32, ideal or pcm, got {cfg.synapse.mode!r}")
    be = config_backend(cfg, backend)
    if not inplace:
        model = copy.deepcopy(model)
    cands = _candidates(model)
    root_why = None if isinstance(model, AnalogModule) else _why_unsupported(model)
    if isinstance(model, (nn.Linear, nn.Conv2d, nn.LSTM)) or root_why is not None:
        cands = [("", model, root_why)]          # the model is one layer: its twin is the result
    bad = [(q or type(m).__name__, why) for q, m, why in cands if why is not None]
    if bad and unsupported == "error":
        raise ConvertError("unsupported layers (pass unsupported='leave' to keep them digital): "
                           + "; ".join(f"{q}: {why}" for q, why in bad))
    ok = [(q, m) for q, m, why in cands if why is None]
    names = {q for q, _ in ok}
    drop = set()
    for s in skip:
        if s == "first" and ok:
            drop.add(ok[0][0])
        elif s == "last" and ok:
            drop.add(ok[-1][0])
        elif s not in ("first", "last"):
            if s not in names:
                raise ConvertError(f"skip: no supported layer named {s!r}; layers: {', '.join(q for q, _ in ok)}")
            drop.add(s)
    todo = [(q, m) for q, m in ok if q not in drop]
    done: dict[int, AnalogModule] = {}
    n = len({id(m) for _, m in todo})          # a module used twice is one layer (one tile)
    if isinstance(cfg, Config) and cfg.synapse.mode != "fp32":
        _check_per_layer(cfg, [q or type(m).__name__ for q, m in todo], n)
    for q, m in todo:
        twin = done.get(id(m))
        if twin is None:
            twin = done[id(m)] = _twin(m, cfg, be, len(done), n)
        if q == "":
            model = twin
            continue
        parent = model.get_submodule(q.rsplit(".", 1)[0]) if "." in q else model
        setattr(parent, q.rsplit(".", 1)[-1], twin)
    if bad:
        warnings.warn("left digital (no analog twin): " + "; ".join(f"{q}: {why}" for q, why in bad),
                      UnsupportedLayerWarning, stacklevel=2)
    return model
