"""Exception types raised by pyconv."""


class SpecError(ValueError):
    """A spec names an unknown op or gives a key a value the op cannot take.

    The message names the op, the key, what was expected and what was given; the
    same facts are kept as attributes for programs that handle the error.

    Examples
    --------
    >>> import pyconv
    >>> try:
    ...     pyconv.Conv({"op": "conv2d", "in_channels": 3, "out_channels": 8,
    ...                  "kernel_size": 3, "stride": 0})
    ... except pyconv.SpecError as e:
    ...     print(e.key)
    stride
    """

    def __init__(self, op, key, expected, given=None, *, detail=None):
        self.op = op
        self.key = key
        self.expected = expected
        self.given = given
        where = f"{op}: " if op else ""
        what = f"spec key {key!r}" if key else "spec"
        message = f"{where}{what} expects {expected}"
        if detail is None:
            message += f"; got {given!r}"
        else:
            message += f"; {detail}"
        super().__init__(message)


class PluginWarning(UserWarning):
    """A third-party op package failed to load; pyconv itself still works."""
