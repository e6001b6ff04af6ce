"""mcasim: mixed-precision training on phase-change-memory crossbars.

The simulator itself lives in the packages ``gpu_model`` (tiles, devices, digital unit), ``sim``
(layers, tasks, trainer, CLI) and ``rtl`` (the digital unit's hardware); this package is the
project's public namespace for front ends built on them:

* :mod:`mcasim.torch` — PyTorch analog layers, ``convert_to_analog`` and the mixed-precision
  optimizer (``pip install 'mcasim[torch]'``; docs/torch.md).
"""
__all__ = ["torch"]
