"""The CUDA kernel families (importing this package registers them in :data:`cnncc.codegen.cuda.families.FAMILIES`):
convolution (implicit GEMM, depthwise, Winograd), pooling, linear and softmax, element-wise and data movement."""

from cnncc.codegen.cuda.kernels import conv, eltwise, linear, pool, winograd

__all__ = ["conv", "eltwise", "linear", "pool", "winograd"]
