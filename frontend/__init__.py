"""cnncc.frontend: the Python DSL (Sequential and functional styles), initialisers, weights and the model zoo.

    import cnncc.frontend as nn
    model = nn.Sequential([nn.Conv2d(6, 5, activation="relu"), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(10)],
                          input_shape=(1, 32, 32), name="tiny")
"""

if __name__ != "cnncc.frontend":  # pragma: no cover - guards the package-dir mapping
    raise ImportError(f"cnncc's frontend package must be imported as 'cnncc.frontend', not '{__name__}'; "
                      "run the tests with `pytest` (importlib mode) from an installed cnncc")

import cnncc.ops  # noqa: F401,E402  (registers every op)
from cnncc.frontend.activations import (  # noqa: E402
    ELU,
    Activation,
    Hardtanh,
    LeakyReLU,
    LogSoftmax,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
)
from cnncc.frontend.layers import (  # noqa: E402
    Add,
    AvgPool2d,
    BatchNorm,
    BatchNorm1d,
    BatchNorm2d,
    Concat,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Layer,
    Linear,
    MaxPool2d,
    Multiply,
    Reshape,
)
from cnncc.frontend.model import Input, Model, Sequential  # noqa: E402

__all__ = ["ELU", "Activation", "Add", "AvgPool2d", "BatchNorm", "BatchNorm1d", "BatchNorm2d", "Concat", "Conv2d",
           "Dense", "Dropout", "Flatten", "GlobalAvgPool2d", "Hardtanh", "Input", "Layer", "LeakyReLU", "Linear",
           "LogSoftmax", "MaxPool2d", "Model", "Multiply", "PReLU", "ReLU", "ReLU6", "Reshape", "Sequential",
           "Sigmoid", "Softmax", "Softplus", "Tanh"]
