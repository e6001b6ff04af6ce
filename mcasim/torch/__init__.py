"""mcasim for PyTorch: analog layers, ``convert_to_analog`` and the mixed-precision optimizer.

    import torch, mcasim.torch as mt
    from sim.config import load_config
    cfg = load_config("configs/cnn_cifar10_pcm.toml")
    model = mt.convert_to_analog(my_torch_model, cfg)           # Linear/Conv2d/LSTM -> PCM tiles
    opt = mt.AnalogOptimizer(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    loss = loss_fn(model(x), y); loss.backward(); opt.step(); opt.zero_grad()

docs/torch.md has the whole story (shapes, the update path, state, DDP, energy, drift).
"""
try:
    import torch as _torch  # noqa: F401
except ImportError as exc:     # pragma: no cover - depends on the environment
    raise ImportError("mcasim.torch needs PyTorch, which is not installed: pip install 'mcasim[torch]' "
                      "(or pip install torch)") from exc

from ._arrays import AnalogTensorError, same_memory  # noqa: E402
from .convert import ConvertError, UnsupportedLayerWarning, convert_to_analog  # noqa: E402
from .layers import AnalogConv2d, AnalogLinear, AnalogLSTM, AnalogModule, analog_modules  # noqa: E402
from .optim import AnalogOptimizer  # noqa: E402
from .tools import (advance, energy_report, evaluate_drift, layer_summary, model_time, set_time,  # noqa: E402
                    tile_events, uncounted)

__all__ = ["AnalogConv2d", "AnalogLinear", "AnalogLSTM", "AnalogModule", "AnalogOptimizer", "AnalogTensorError",
           "ConvertError", "UnsupportedLayerWarning", "advance", "analog_modules", "convert_to_analog",
           "energy_report", "evaluate_drift", "layer_summary", "model_time", "same_memory", "set_time",
           "tile_events", "uncounted"]
