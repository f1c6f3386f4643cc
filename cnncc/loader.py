"""Find a model by name: a zoo name (``resnet18``) or a Python file exposing a ``model()`` function."""

from __future__ import annotations

import importlib.util
import os
import sys

from cnncc.errors import CnnccError, ModelError


def load_model(spec: str, seed: int = 0):  # noqa: ANN201 - returns cnncc.frontend.Model (lazy import)
    """Build the model that ``spec`` names; a missing file, a file without ``model()`` or an unknown name raise."""
    from cnncc.frontend import Model
    from cnncc.frontend.models import ZOO, get_model

    if spec.endswith(".py") or os.sep in spec:
        if not os.path.isfile(spec):
            raise ModelError(f"model file '{spec}' does not exist")
        mod_name = f"cnncc_user_model_{abs(hash(os.path.abspath(spec)))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, spec)
        if module_spec is None or module_spec.loader is None:
            raise ModelError(f"model file '{spec}' cannot be imported as Python")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except CnnccError:
            raise
        except Exception as e:
            raise ModelError(f"model file '{spec}' failed to import: {type(e).__name__}: {e}") from e
        factory = getattr(module, "model", None)
        if not callable(factory):
            raise ModelError(f"model file '{spec}' has no model() function")
        model = factory()
        if not isinstance(model, Model):
            raise ModelError(f"model file '{spec}': model() returned {type(model).__name__}, not a cnncc Model")
        return model
    if spec in ZOO:
        return get_model(spec, seed=seed)
    return get_model(spec)  # raises ModelError with the zoo's names
