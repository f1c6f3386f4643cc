"""The seeds' small digit models: LeNet-5 (seed 001), the PyTorch LeNet (seed 003), two Keras models (seeds 000, 003).

Layer names follow each seed's code, so a PyTorch module written like the seed loads its ``state_dict`` directly.
"""

from __future__ import annotations

import cnncc.frontend as nn


def lenet5(seed: int = 0) -> nn.Model:
    """LeNet-5 as in seed 001 L2467-2489: 32x32 input, 6 and 16 5x5 filters, 2x2/2 max pooling, MLP 120-84-10.

    The slide states no activation; ReLU is the deck's default elsewhere. Output: 10 logits. 61,706 parameters.
    """
    return nn.Sequential([
        nn.Conv2d(6, 5, activation="relu", name="conv1"),
        nn.MaxPool2d(2, 2, name="pool1"),
        nn.Conv2d(16, 5, activation="relu", name="conv2"),
        nn.MaxPool2d(2, 2, name="pool2"),
        nn.Flatten(name="flatten"),
        nn.Linear(120, activation="relu", name="fc1"),
        nn.Linear(84, activation="relu", name="fc2"),
        nn.Linear(10, name="fc3"),
    ], input_shape=(1, 32, 32), name="lenet5", seed=seed)


def lenet(num_channels: int = 1, classes: int = 10, seed: int = 0) -> nn.Model:
    """The PyTorch ``LeNet(numChannels, classes)`` of seed 003 L8-65 (28x28 input: 800 = 50·4·4 features).

    Log-probabilities out. 431,080 parameters for 1 channel and 10 classes.
    """
    return nn.Sequential([
        nn.Conv2d(20, 5, name="conv1"), nn.ReLU(name="relu1"), nn.MaxPool2d(2, 2, name="maxpool1"),
        nn.Conv2d(50, 5, name="conv2"), nn.ReLU(name="relu2"), nn.MaxPool2d(2, 2, name="maxpool2"),
        nn.Flatten(name="flatten"),
        nn.Linear(500, name="fc1"), nn.ReLU(name="relu3"),
        nn.Linear(classes, name="fc2"), nn.LogSoftmax(axis=1, name="logSoftmax"),
    ], input_shape=(num_channels, 28, 28), name="lenet", seed=seed)


def keras_mnist(seed: int = 0) -> nn.Model:
    """Seed 000's "Build A CNN with TensorFlow" Keras model (channels_first, 'same' convolutions and pools).

    (1,28,28) -> 32 5x5 -> pool -> 64 5x5 -> pool -> 1024 -> 10 softmax. 3,274,634 parameters.
    """
    return nn.Sequential([
        nn.Conv2d(32, 5, padding="same", name="conv1"), nn.Activation("relu", name="act1"),
        nn.MaxPool2d(2, 2, padding="same", name="pool1"),
        nn.Conv2d(64, 5, padding="same", name="conv2"), nn.Activation("relu", name="act2"),
        nn.MaxPool2d(2, 2, padding="same", name="pool2"),
        nn.Flatten(name="flatten"),
        nn.Dense(1024, name="dense1"), nn.Activation("relu", name="act3"),
        nn.Dense(10, name="dense2"), nn.Activation("softmax", name="softmax"),
    ], input_shape=(1, 28, 28), name="keras_mnist", seed=seed)


def keras_sequential(seed: int = 0) -> nn.Model:
    """Seed 003's Keras ``Sequential`` (L254-268): channels_last (28, 28, 1) input, 203,434 parameters.

    The NHWC input is transposed to NCHW at the graph edge; ``Flatten`` then orders features as (C, H, W), where
    Keras orders them (H, W, C): permute Dense weights imported from Keras accordingly.
    """
    return nn.Sequential([
        nn.Conv2d(64, 3, activation="relu", name="conv1"),
        nn.Conv2d(32, 3, activation="relu", name="conv2"),
        nn.Flatten(name="flatten"),
        nn.Dense(10, activation="softmax", name="dense"),
    ], input_shape=(28, 28, 1), layout="NHWC", name="keras_sequential", seed=seed)
