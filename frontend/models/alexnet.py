"""AlexNet from the seed 003 table (L70-83): 227x227x3 input, single tower (no 2-GPU grouping).

227 -> conv1 11/4 -> 55 -> pool 3/2 -> 27 -> conv2 5 p2 -> 27 -> pool -> 13 -> conv3-5 3 p1 -> 13 -> pool -> 6;
9216 -> 4096 -> 4096 -> 1000. The "normalization" (LRN) layers are left out: seed 001 calls them unnecessary.
Dropout 0.5 before fc6 and fc7 (seed 001: FC layers only). Outputs logits; 62,378,344 parameters.
"""

from __future__ import annotations

import cnncc.frontend as nn


def alexnet(num_classes: int = 1000, seed: int = 0) -> nn.Model:
    return nn.Sequential([
        nn.Conv2d(96, 11, stride=4, activation="relu", name="conv1"), nn.MaxPool2d(3, 2, name="pool1"),
        nn.Conv2d(256, 5, padding=2, activation="relu", name="conv2"), nn.MaxPool2d(3, 2, name="pool2"),
        nn.Conv2d(384, 3, padding=1, activation="relu", name="conv3"),
        nn.Conv2d(384, 3, padding=1, activation="relu", name="conv4"),
        nn.Conv2d(256, 3, padding=1, activation="relu", name="conv5"), nn.MaxPool2d(3, 2, name="pool5"),
        nn.Flatten(name="flatten"),
        nn.Dropout(0.5, name="drop6"), nn.Linear(4096, activation="relu", name="fc6"),
        nn.Dropout(0.5, name="drop7"), nn.Linear(4096, activation="relu", name="fc7"),
        nn.Linear(num_classes, name="fc8"),
    ], input_shape=(3, 227, 227), name="alexnet", seed=seed)
