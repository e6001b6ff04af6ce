"""Networks: weight stores, layers with explicit backward, optimizers, initialisers.

Knows nothing of datasets, the CLI or files. See :mod:`sim.nn.layers` for the shapes.
"""
from .init import init_weights  # noqa: F401
from .layers import (ACTIVATIONS, AvgPool2d, BatchNorm, Conv2d, Dense, Dropout, Flatten,  # noqa: F401
                     LayerError, MaxPool2d, Module, Param, ReLU, Sequential, Sigmoid, Tanh,
                     apply_updates, col2im, im2col)
from .losses import softmax, softmax_cross_entropy  # noqa: F401
from .optim import Optimizer  # noqa: F401
from .recurrent import LSTM  # noqa: F401
from .stores import AnalogWeights, FP32Weights  # noqa: F401
