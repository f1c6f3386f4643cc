"""CPU kernel templates and their lowerings; importing this package registers them."""

from cnncc.codegen import conv_algorithms  # noqa: F401,E402  (the conv algorithms' records and the conv2d lowering)
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
