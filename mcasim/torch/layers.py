"""Analog layers as ``torch.nn.Module``s: every MVM on an mcasim weight store (a PCM tile).

Each layer owns one weight store (:mod:`sim.nn.stores`: an :class:`~sim.nn.stores.AnalogWeights`
around one :class:`gpu_model.tile.AnalogTile`, or fp32) and does what the native layer of
:mod:`sim.nn` does, inside a ``torch.autograd.Function``:

* forward: the tile's read (DAC -> noisy MVM -> ADC), ``tile.forward``;
* backward: the transposed read for the input error (``tile.backward``; skipped where torch needs
  no input gradient, as the native first layer), and the weight gradient d^T x computed digitally;
* the gradient lands in ``.grad`` of ``weight``, a Parameter that mirrors the tile's weights
  (it views the store's array: no copy) so that torch optimizers see it. Never write into it:
  the tile is changed only by :class:`mcasim.torch.AnalogOptimizer` (chi -> DPU -> pulses).

Shapes: ``AnalogLinear`` (..., in) -> (..., out); ``AnalogConv2d`` NCHW (B, C_in, H, W) ->
(B, C_out, Ho, Wo) by im2col onto the (C_out, k*k*C_in) tile, columns (kh, kw, c_in) as the native
conv, ``weight`` (C_out, C_in, k, k) a channels-last view of it; ``AnalogLSTM`` (B, T, in)
(``batch_first``) -> (B, T, H), one (4H, in + H) gate matrix on one tile, gates i, f, g, o, the
cell arithmetic and BPTT of the native LSTM (:class:`sim.nn.recurrent.LSTM`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gpu_model.backend import Backend
from sim.config import Config
from sim.nn.layers import col2im, im2col
from sim.nn.recurrent import LSTM as _NativeLSTM
from sim.nn.stores import AnalogWeights

from ._arrays import AnalogTensorError, as_array, as_tensor, check_tensor
from .config import config_backend, make_layer_store, resolve_config
from .state import arrays_to_tensors, tensors_to_arrays


class AnalogModule(nn.Module):
    """Base of the analog layers: one weight store, its mirrored ``weight`` Parameter, its state.

    ``store``: the weight store; ``tile``: its :class:`~gpu_model.tile.AnalogTile` (None for an
    fp32 store); ``layer_index``: the layer's index among the converted layers (per-layer config
    values, random stream ``100 + layer_index``, update order: highest first).
    """

    def _init_store(self, store, backend: Backend, layer_index: int):
        self.store, self.backend, self.xp = store, backend, backend.xp
        self.layer_index = int(layer_index)
        self.out_scale = None       # digital factor on the MVM output (drift compensation, GDC)
        self.record_mvm = False     # keep the last MVM output in ``mvm`` (drift calibration)
        self.mvm = None
        self.update_macs = 0        # MACs of the weight gradients since the last optimizer step
        self._w_array = None
        self.weight = nn.Parameter(torch.empty(0))
        self.weight._mcasim_module = self  # lets AnalogOptimizer find the tile of this Parameter
        self._sync_weight()

    # --- the mirror of the tile's weights -------------------------------------------------------
    def _weight_view(self, w2: torch.Tensor) -> torch.Tensor:
        """The Parameter's view of the store's (out, in) matrix (its torch shape)."""
        return w2

    def _sync_weight(self) -> None:
        """Point ``weight`` at the store's current weight array (the reference engine replaces its
        cache array on a full drift recompute; the view moves with it, without a copy)."""
        w = self.store.weights()
        if w is not self._w_array:
            self._w_array = w
            self.weight.data = self._weight_view(as_tensor(w))

    @property
    def tile(self):
        return self.store.tile if isinstance(self.store, AnalogWeights) else None

    @property
    def kind(self) -> str:
        return self.store.kind

    @property
    def events(self):
        """The tile's cumulative :class:`~gpu_model.tile.TileEvents` (None for an fp32 store)."""
        return None if self.tile is None else self.tile.events

    def _read_mode(self) -> None:
        if self.tile is not None:
            self.tile.count_events = self.training   # evaluation reads are not training events

    def _mvm_out(self, y):
        """Native Dense/Conv2d: the digital output scale (GDC) and the calibration record."""
        if self.out_scale is not None:
            y = y * self.out_scale
        if self.record_mvm:
            self.mvm = y
        return y

    # --- state: the tile's devices, chi and streams as extra state ------------------------------
    def get_extra_state(self):
        return {"mcasim_store": self.store.kind, "state": arrays_to_tensors(self.store.state_dict(self.backend))}

    def set_extra_state(self, state) -> None:
        if state.get("mcasim_store") != self.store.kind:
            raise ValueError(f"{type(self).__name__}: the saved state is of a {state.get('mcasim_store')!r} "
                             f"store, this layer has a {self.store.kind!r} one (convert with the same config)")
        self.store.load_state_dict(tensors_to_arrays(state["state"]))
        self._w_array = None
        self._sync_weight()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key, extra = prefix + "weight", prefix + "_extra_state"
        programmed = False
        if key in state_dict:
            saved = state_dict[key]
            state_dict = dict(state_dict)
            if extra not in state_dict:
                # a plain torch state dict (no tile state): program its weights onto the devices
                self.program(saved)
                programmed = True
            state_dict[key] = self.weight.detach()   # never copied into the mirror itself
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if programmed and extra in missing_keys:      # the weights were programmed: nothing is missing
            missing_keys.remove(extra)

    def _tile_matrix(self, weight: torch.Tensor) -> np.ndarray:
        """A torch-shaped weight tensor as the store's (out, in) NumPy matrix."""
        return weight.detach().cpu().float().reshape(self._w_array.shape).numpy()

    def program(self, weight: torch.Tensor) -> None:
        """Write ``weight`` (the Parameter's shape) onto the store (analog: program-and-verify)."""
        w = self._tile_matrix(weight)
        if self.tile is not None:
            s = self.tile.config.synapse
            w = np.clip(w, -s.w_max * s.refresh_threshold, s.w_max * s.refresh_threshold)
            self.tile.program(w)
        else:
            self.store.w[...] = self.xp.asarray(w)
        self._w_array = None
        self._sync_weight()

    def extra_repr(self) -> str:
        t = self.tile
        dev = "fp32" if t is None else f"analog, w_max={t.w_max:g}, engine={t.config.engine}"
        return f", layer={self.layer_index}, store={dev}"


def _store_for(config, backend, w0, layer_index, n_layers):
    """(store, backend, simulated seconds per training step) of one layer from its config."""
    cfg = resolve_config(config)
    be = config_backend(cfg, backend)
    dt = float(cfg.train.seconds_per_batch) if isinstance(cfg, Config) else 0.0
    return make_layer_store(cfg, be, w0, layer_index, n_layers), be, dt


class _TileMVM(torch.autograd.Function):
    """y = W x + b on the tile (B, in) -> (B, out); backward: W^T d on the tile, d^T x and the
    bias gradient (sum of d over the batch) digitally, as the native Dense."""

    @staticmethod
    def forward(ctx, x2, weight, bias, module):
        xp = module.xp
        xa = as_array(x2, xp, f"{module._name()} input")
        y = module._mvm_out(module.store.forward(xa))
        if bias is not None:
            y = y + as_array(bias, xp, f"{module._name()} bias")
        ctx.module, ctx.xa = module, xa
        return as_tensor(y)

    @staticmethod
    def backward(ctx, dy):
        m = ctx.module
        d = as_array(dy, m.xp, f"{m._name()} output gradient")
        gb = as_tensor(d.sum(axis=0)) if ctx.needs_input_grad[2] else None
        gw = d.T @ ctx.xa                          # dL/dW = d^T x: outer products summed over the batch
        m.update_macs += int(d.shape[0]) * int(gw.size)
        dx = as_tensor(m.store.backward(d)) if ctx.needs_input_grad[0] else None   # transposed read
        ctx.xa = None
        return dx, m._weight_view(as_tensor(gw)), gb, None


class AnalogLinear(AnalogModule):
    """y = W x + b with W (out, in) on an analog tile, b digital. x (..., in) -> (..., out).

    ``config``: a :class:`sim.config.Config`, a TOML path or a :class:`TileConfig`; ``w0``:
    initial (out, in) weights (default: ``nn.Linear``'s init); ``layer_index``/``n_layers``: its
    place among the converted layers (per-layer config values)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, config, w0=None,
                 backend=None, layer_index: int = 0, n_layers: int = 1):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        if w0 is None:
            w0 = nn.Linear(in_features, out_features, bias=False).weight.detach().numpy()
        store, be, self.seconds_per_batch = _store_for(config, backend, w0, layer_index, n_layers)
        self._init_store(store, be, layer_index)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def _name(self):
        return f"AnalogLinear({self.in_features}, {self.out_features})"

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{self._name()}: input must be (..., {self.in_features}), got {tuple(x.shape)}")
        self._read_mode()
        self._sync_weight()
        lead = x.shape[:-1]
        y = _TileMVM.apply(x.reshape(-1, self.in_features), self.weight, self.bias, self)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}" + super().extra_repr()


class _TileConv(torch.autograd.Function):
    """Convolution by im2col on the tile: x NCHW -> y NCHW (a view of the tile's NHWC output);
    bias added and its gradient summed digitally, as the native Conv2d."""

    @staticmethod
    def forward(ctx, x, weight, bias, module):
        m, xp = module, module.xp
        xa = as_array(x.permute(0, 2, 3, 1), xp, f"{m._name()} input")        # NHWC
        cols, Ho, Wo = im2col(xp, xa, m.k, m.stride, m.pad, bufs=m._bufs)
        if Ho < 1 or Wo < 1:
            raise ValueError(f"{m._name()}: input {tuple(x.shape[2:])} smaller than the kernel")
        m._generation += 1
        ctx.module, ctx.xa, ctx.cols, ctx.gen, ctx.hw = m, xa, cols, m._generation, (Ho, Wo)
        m.positions = Ho * Wo
        y = m._mvm_out(m.store.forward(cols))                # one crossbar read per patch
        if bias is not None:
            y += as_array(bias, xp, f"{m._name()} bias")
        B = xa.shape[0]
        return as_tensor(y).view(B, Ho, Wo, m.out_channels).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, dy):
        m, xp = ctx.module, ctx.module.xp
        Ho, Wo = ctx.hw
        cols = ctx.cols
        if ctx.gen != m._generation:     # a later forward reused the patch buffers: patches again
            cols = im2col(xp, ctx.xa, m.k, m.stride, m.pad)[0]
        d2 = as_array(dy.permute(0, 2, 3, 1), xp, f"{m._name()} output gradient").reshape(-1, m.out_channels)
        gb = as_tensor(d2.sum(axis=0)) if ctx.needs_input_grad[2] else None
        gw = d2.T @ cols                         # (C_out, k*k*C_in), summed over batch and positions
        m.update_macs += int(d2.shape[0]) * int(gw.size)
        dx = None
        if ctx.needs_input_grad[0]:
            g = m.store.backward(d2)             # transposed read per position
            dx = as_tensor(col2im(xp, g, ctx.xa.shape, m.k, m.stride, m.pad, Ho, Wo)).permute(0, 3, 1, 2)
        ctx.cols = ctx.xa = None
        return dx, m._weight_view(as_tensor(gw)), gb, None


class AnalogConv2d(AnalogModule):
    """2-D convolution (square kernel k, stride, zero padding) by im2col on an analog tile.

    x (B, C_in, H, W) -> (B, C_out, Ho, Wo). The tile holds the (C_out, k*k*C_in) kernel matrix,
    columns (kh, kw, c_in) as the native conv; ``weight`` is its (C_out, C_in, k, k) view.
    ``w0``: initial weights (C_out, C_in, k, k) (default: ``nn.Conv2d``'s init)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True, *, config, w0=None, backend=None,
                 layer_index: int = 0, n_layers: int = 1):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.k, self.stride, self.pad = int(kernel_size), int(stride), int(padding)
        if self.k < 1 or self.stride < 1 or self.pad < 0:
            raise ValueError("AnalogConv2d: kernel_size >= 1, stride >= 1, padding >= 0 required")
        if w0 is None:
            w0 = nn.Conv2d(in_channels, out_channels, kernel_size, bias=False).weight.detach()
        w0 = torch.as_tensor(w0, dtype=torch.float32)
        mat = w0.permute(0, 2, 3, 1).reshape(self.out_channels, -1).numpy()    # (kh, kw, c_in) columns
        store, be, self.seconds_per_batch = _store_for(config, backend, mat, layer_index, n_layers)
        self._bufs, self._generation, self.positions = {}, 0, None
        self._init_store(store, be, layer_index)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def _name(self):
        return f"AnalogConv2d({self.in_channels}, {self.out_channels}, {self.k})"

    def _weight_view(self, w2):
        return w2.view(self.out_channels, self.k, self.k, self.in_channels).permute(0, 3, 1, 2)

    def _tile_matrix(self, weight):
        return weight.detach().cpu().float().permute(0, 2, 3, 1).reshape(self.out_channels, -1).numpy()

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self._name()}: input must be (batch, {self.in_channels}, H, W), got {tuple(x.shape)}")
        self._read_mode()
        self._sync_weight()
        return _TileConv.apply(x, self.weight, self.bias, self)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.k}, stride={self.stride}, " \
               f"padding={self.pad}, bias={self.bias is not None}" + super().extra_repr()


class _TileLSTM(torch.autograd.Function):
    """The native LSTM's window (forward and BPTT) with its gate matrix on the tile."""

    @staticmethod
    def forward(ctx, x, h0, c0, weight, bias, module):
        m, xp = module, module.xp
        core = m._core
        core.b.value = as_array(bias, xp, f"{m._name()} bias")
        xa = as_array(x, xp, f"{m._name()} input")
        h0a = None if h0 is None else as_array(h0, xp, f"{m._name()} h0")
        c0a = None if c0 is None else as_array(c0, xp, f"{m._name()} c0")
        hs = core.forward(xa, h0a, c0a)
        ctx.module, ctx.cache = m, core._cache
        core._cache = None
        return as_tensor(hs), as_tensor(core.h), as_tensor(core.c)

    @staticmethod
    def backward(ctx, d_hs, d_hn, d_cn):
        m, xp = ctx.module, ctx.module.xp
        core = m._core
        z = ctx.cache[0]
        T, B = int(z.shape[0]), int(z.shape[1])
        if d_cn is not None and bool((d_cn != 0).any()):
            raise RuntimeError(f"{m._name()}: no gradient through the final cell state c_n "
                               f"(use the outputs or h_n, or detach c_n)")
        d = xp.zeros((B, T, m.hidden_size), dtype=np.float32) if d_hs is None else \
            as_array(d_hs, xp, f"{m._name()} output gradient")
        if d_hn is not None:
            d = d.copy()
            d[:, T - 1] += as_array(d_hn, xp, f"{m._name()} h_n gradient")   # h_n = h_{T-1}
        need_dh0 = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        core._cache, ctx.cache = ctx.cache, None
        dx = core.backward(d, need_dx=ctx.needs_input_grad[0], need_dh0=need_dh0)
        m.update_macs += T * B * int(core.w.grad.size)
        gw, gb = m._weight_view(as_tensor(core.w.grad)), as_tensor(core.b.grad)
        core.w.grad = core.b.grad = None
        dh0 = dc0 = None
        if need_dh0:
            dh0, dc0 = as_tensor(xp.ascontiguousarray(core.dh0)), as_tensor(xp.ascontiguousarray(core.dc0))
        return (None if dx is None else as_tensor(dx)), dh0, dc0, gw, gb, None


class AnalogLSTM(AnalogModule):
    """One LSTM layer with its (4H, in + H) gate matrix on one analog tile (gates i, f, g, o; columns
    [x_t, h_{t-1}]), bias (4H) and cell arithmetic digital: the native LSTM's forward and BPTT.

    ``forward(x, (h0, c0))`` as ``nn.LSTM`` (one layer): x (B, T, in) with ``batch_first`` (else
    (T, B, in)), h0/c0 (1, B, H) or None -> (output (B, T, H), (h_n, c_n) each (1, B, H)).
    ``w0``: initial (4H, in + H) weights (default: ``nn.LSTM``'s init); ``bias0``: (4H) (default:
    zeros with the forget gate at ``forget_bias``)."""

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = True, *, config, w0=None,
                 bias0=None, forget_bias: float = 1.0, backend=None, layer_index: int = 0, n_layers: int = 1):
        super().__init__()
        self.input_size, self.hidden_size, self.batch_first = int(input_size), int(hidden_size), bool(batch_first)
        H = self.hidden_size
        if w0 is None:
            ref = nn.LSTM(input_size, hidden_size, batch_first=True)
            w0 = torch.cat([ref.weight_ih_l0, ref.weight_hh_l0], dim=1).detach().numpy()
        store, be, self.seconds_per_batch = _store_for(config, backend, w0, layer_index, n_layers)
        self._init_store(store, be, layer_index)
        self._core = _NativeLSTM(f"lstm{layer_index}", store, be.xp, self.input_size, H, forget_bias=forget_bias)
        b = torch.zeros(4 * H) if bias0 is None else torch.as_tensor(bias0, dtype=torch.float32).clone()
        if bias0 is None:
            b[H:2 * H] = forget_bias
        self.bias = nn.Parameter(b)

    def _name(self):
        return f"AnalogLSTM({self.input_size}, {self.hidden_size})"

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        ih, hh = prefix + "weight_ih_l0", prefix + "weight_hh_l0"
        if ih in state_dict and hh in state_dict and prefix + "weight" not in state_dict:
            # a plain nn.LSTM state dict: one gate matrix [W_ih, W_hh] and one bias b_ih + b_hh
            state_dict = dict(state_dict)
            state_dict[prefix + "weight"] = torch.cat([state_dict.pop(ih), state_dict.pop(hh)], dim=1)
            b = [state_dict.pop(prefix + k, None) for k in ("bias_ih_l0", "bias_hh_l0")]
            if b[0] is not None:
                state_dict[prefix + "bias"] = b[0] + (b[1] if b[1] is not None else 0)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    @property
    def weight_ih_l0(self) -> torch.Tensor:
        """(4H, in) view of the gate matrix (read-only use)."""
        return self.weight[:, :self.input_size]

    @property
    def weight_hh_l0(self) -> torch.Tensor:
        """(4H, H) view of the gate matrix (read-only use)."""
        return self.weight[:, self.input_size:]

    def forward(self, x, state=None):
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"{self._name()}: input must be (batch, time, {self.input_size}), got {tuple(x.shape)}")
        if not self.batch_first:
            x = x.transpose(0, 1)
        self._read_mode()
        self._sync_weight()
        h0 = c0 = None
        if state is not None:
            h0, c0 = (s if s is None or s.ndim == 2 else s.reshape(s.shape[-2], s.shape[-1]) for s in state)
        out, hn, cn = _TileLSTM.apply(x, h0, c0, self.weight, self.bias, self)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, (hn.unsqueeze(0), cn.unsqueeze(0))

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, batch_first={self.batch_first}" + super().extra_repr()


def analog_modules(model: nn.Module) -> list[AnalogModule]:
    """The analog layers of ``model`` in module order (each once)."""
    seen, out = set(), []
    for m in model.modules():
        if isinstance(m, AnalogModule) and id(m) not in seen:
            seen.add(id(m))
            out.append(m)
    return out


__all__ = ["AnalogModule", "AnalogLinear", "AnalogConv2d", "AnalogLSTM", "AnalogTensorError", "analog_modules",
           "check_tensor"]
