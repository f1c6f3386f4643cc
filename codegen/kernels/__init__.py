"""CPU kernel templates and their lowerings; importing this package registers them."""

from cnncc.codegen.kernels import conv, depthwise, eltwise, pool, relayout, rowwise  # noqa: F401
