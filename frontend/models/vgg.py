"""VGG (seed 001 L2629-2647): only 3x3 convolutions, stride 1, pad 1, and 2x2/2 max pooling; 224x224 input.

VGG-11 is configuration A, VGG-16 configuration D (the seed's "final arch": 138,357,544 parameters). Logits out.
"""

from __future__ import annotations

import cnncc.frontend as nn

CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
}


def vgg(config: str, num_classes: int = 1000, seed: int = 0) -> nn.Model:
    layers: list[nn.Layer] = []
    for block, widths in enumerate(CONFIGS[config], start=1):
        for i, width in enumerate(widths, start=1):
            layers.append(nn.Conv2d(width, 3, padding=1, activation="relu", name=f"conv{block}_{i}"))
        layers.append(nn.MaxPool2d(2, 2, name=f"pool{block}"))
    layers += [
        nn.Flatten(name="flatten"),
        nn.Linear(4096, activation="relu", name="fc6"), nn.Dropout(0.5, name="drop6"),
        nn.Linear(4096, activation="relu", name="fc7"), nn.Dropout(0.5, name="drop7"),
        nn.Linear(num_classes, name="fc8"),
    ]
    return nn.Sequential(layers, input_shape=(3, 224, 224), name=config, seed=seed)


def vgg11(num_classes: int = 1000, seed: int = 0) -> nn.Model:
    return vgg("vgg11", num_classes, seed)


def vgg16(num_classes: int = 1000, seed: int = 0) -> nn.Model:
    return vgg("vgg16", num_classes, seed)
