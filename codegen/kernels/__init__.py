"""CPU kernel templates and their lowerings; importing this package registers them."""

from cnncc.codegen.kernels import (  # noqa: F401
    backward,
    batchnorm,
    conv,
    depthwise,
    dropout,
    eltwise,
    gather,
    grad,
    im2col,
    optim,
    pool,
    relayout,
    rowwise,
    transform_conv,
)
