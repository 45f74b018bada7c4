"""Compiled kernels (private). Callers validate and allocate; kernels trust their arguments."""
