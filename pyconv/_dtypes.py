"""The input dtype rule.

float32 and float64 are computed natively and returned as given. Every other real
dtype (bool, integers, float16) is converted as NumPy would promote it together with
float32: ``np.result_type(dtype, np.float32)``, so bool, (u)int8/16 and float16
compute in float32 and (u)int32/64 in float64. Complex, object, string and extended
precision inputs are refused with a ``TypeError``.
"""
import numpy as np

NATIVE = (np.dtype(np.float32), np.dtype(np.float64))
#: The name of each native dtype (``dtype.name`` costs about 6 us a call, which adds
#: up in the per-call Python of small convolutions).
NATIVE_NAMES = {dtype: dtype.name for dtype in NATIVE}


def compute_dtype(op_name, dtype):
    """The dtype an input of ``dtype`` is computed (and returned) in."""
    dtype = np.dtype(dtype)
    if dtype in NATIVE:
        return dtype
    if dtype.kind in "biuf":
        promoted = np.result_type(dtype, np.float32)
        if promoted in NATIVE:
            return promoted
    raise TypeError(f"{op_name}: input dtype {dtype} is not supported; expected a real "
                    "numeric dtype (float32 and float64 natively; bool, integers and "
                    "float16 are converted to float32 or float64)")
