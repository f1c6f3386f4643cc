"""CPU kernel templates and their lowerings; importing this package registers them."""

from cnncc.codegen.kernels import conv, depthwise, eltwise, im2col, pool, relayout, rowwise, transform_conv  # noqa: F401
