"""The model zoo: the seeds' architectures, by name. ``get_model("resnet18")`` builds one with seeded weights."""

from __future__ import annotations

from collections.abc import Callable

from cnncc.errors import ModelError
from cnncc.frontend.model import Model
from cnncc.frontend.models.alexnet import alexnet
from cnncc.frontend.models.googlenet import googlenet
from cnncc.frontend.models.lenet import keras_mnist, keras_sequential, lenet, lenet5
from cnncc.frontend.models.mobilenet import mobilenet_v2
from cnncc.frontend.models.resnet import resnet18, resnet50
from cnncc.frontend.models.vgg import vgg11, vgg16

ZOO: dict[str, Callable[..., Model]] = {
    "lenet5": lenet5, "lenet": lenet, "keras_mnist": keras_mnist, "keras_sequential": keras_sequential,
    "alexnet": alexnet, "vgg11": vgg11, "vgg16": vgg16, "googlenet": googlenet,
    "resnet18": resnet18, "resnet50": resnet50, "mobilenet_v2": mobilenet_v2,
}


def get_model(name: str, seed: int = 0) -> Model:
    if name not in ZOO:
        import difflib

        near = difflib.get_close_matches(name, ZOO, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ModelError(f"unknown zoo model '{name}'; the zoo has {', '.join(ZOO)}{hint}")
    return ZOO[name](seed=seed)


__all__ = ["ZOO", "alexnet", "get_model", "googlenet", "keras_mnist", "keras_sequential", "lenet", "lenet5",
           "mobilenet_v2", "resnet18", "resnet50", "vgg11", "vgg16"]
