"""The op registry and one module per op. Importing this package registers every op."""

# Importing each op module registers its op; the list is the registry.
from cnncc.ops import (  # noqa: F401
    adagrad_update,
    adam_update,
    add,
    avg_pool2d,
    batch_norm,
    concat,
    conv2d,
    cross_entropy,
    dropout,
    elu,
    flatten,
    fused_conv2d,
    fused_linear,
    global_avg_pool,
    hardtanh,
    leaky_relu,
    linear,
    log_softmax,
    max_pool2d,
    mse,
    multiply,
    nll,
    prelu,
    relu,
    relu6,
    reshape,
    rmsprop_update,
    sgd_update,
    sigmoid,
    softmax,
    softplus,
    tanh,
    transpose,
)
from cnncc.ops.registry import NoAttrs, OpDef, Where, all_ops, get_op, register

__all__ = ["NoAttrs", "OpDef", "Where", "all_ops", "get_op", "register"]
