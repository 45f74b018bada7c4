# Shared GEMM epilogue (inline, compiled into each user).
from cython cimport floating


cdef inline void bias_relu_tile(floating* c, Py_ssize_t rows, Py_ssize_t cols,
                                Py_ssize_t ldc, const floating* bias, bint has_bias,
                                bint relu) noexcept nogil:
    # On a tile that is still in cache: bias add, then the fused activation. ReLU keeps
    # NaN, as torch.relu does.
    cdef Py_ssize_t i, j
    cdef floating b, v
    cdef floating* row
    for i in range(rows):
        row = c + i * ldc
        b = bias[i] if has_bias else 0
        if relu:
            for j in range(cols):
                v = row[j] + b
                row[j] = 0 if v < 0 else v
        elif has_bias:
            for j in range(cols):
                row[j] = row[j] + b
