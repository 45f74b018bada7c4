"""Declarations of spec keys: name, default, validation and normalisation.

An op lists its keys as :class:`Key` objects. Validation turns what a user wrote
(an int, a tuple, a JSON list) into one normal, JSON-able form, so that
``Conv(c.spec).spec == c.spec`` and two equivalent specs compare equal.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

REQUIRED = object()


class Invalid(Exception):
    """Raised by a validator: ``expected`` says what would have been accepted."""

    def __init__(self, expected, detail=None):
        super().__init__(expected)
        self.expected = expected
        self.detail = detail


@dataclass(frozen=True)
class Key:
    """One spec key of an op.

    Parameters
    ----------
    name : str
        The key as written in a spec.
    check : callable
        ``check(value) -> normalised value``; raises :class:`Invalid`.
    default : object
        Used when the key is absent; ``REQUIRED`` makes the key mandatory.
    doc : str
        One sentence for the op reference.
    type_doc : str
        What the key accepts, in words (shown in errors and docs).
    """

    name: str
    check: Callable[[Any], Any]
    default: Any = REQUIRED
    doc: str = ""
    type_doc: str = field(default="")

    @property
    def required(self):
        return self.default is REQUIRED


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def int_value(minimum=None):
    """An integer, at least ``minimum``."""
    bound = "" if minimum is None else (" >= %d" % minimum)
    expected = f"an int{bound}"

    def check(v):
        if not _is_int(v) or (minimum is not None and v < minimum):
            raise Invalid(expected)
        return int(v)

    check.expected = expected
    return check


def int_tuple(rank, minimum=1):
    """An int (broadcast to every axis) or a sequence of ``rank`` ints."""
    bound = "positive" if minimum == 1 else f">= {minimum}"
    expected = f"a {bound} int or a sequence of {rank} {bound} ints"

    def check(v):
        if _is_int(v):
            values = [int(v)] * rank
        elif isinstance(v, (list, tuple)) and len(v) == rank and all(_is_int(e) for e in v):
            values = [int(e) for e in v]
        else:
            raise Invalid(expected)
        if any(e < minimum for e in values):
            raise Invalid(expected)
        return values

    check.expected = expected
    return check


PADDING_WORDS = ("valid", "same", "same_lower")


def padding(rank, words=PADDING_WORDS):
    """Padding: a word, an int, ``rank`` ints, or ``rank`` ``(lo, hi)`` pairs.

    Explicit paddings are normalised to a list of ``[lo, hi]`` pairs per axis;
    ``"valid"`` becomes zero pairs; ``"same"``/``"same_lower"`` stay words because
    their amounts depend on the input size.
    """
    word_text = " or ".join(repr(w) for w in words)
    expected = (f"{word_text}, a non-negative int, a sequence of {rank} such ints, "
                f"or a sequence of {rank} (lo, hi) pairs")

    def check(v):
        if isinstance(v, str):
            if v not in words:
                raise Invalid(expected)
            if v == "valid":
                return [[0, 0] for _ in range(rank)]
            return v
        if _is_int(v):
            pairs = [[int(v), int(v)] for _ in range(rank)]
        elif isinstance(v, (list, tuple)) and len(v) == rank:
            pairs = []
            for e in v:
                if _is_int(e):
                    pairs.append([int(e), int(e)])
                elif (isinstance(e, (list, tuple)) and len(e) == 2
                      and all(_is_int(t) for t in e)):
                    pairs.append([int(e[0]), int(e[1])])
                else:
                    raise Invalid(expected)
        else:
            raise Invalid(expected)
        if any(t < 0 for pair in pairs for t in pair):
            raise Invalid(expected)
        return pairs

    check.expected = expected
    return check


def choice(*values):
    """One of ``values`` (compared with ``==``)."""
    expected = "one of " + ", ".join(repr(v) for v in values)

    def check(v):
        for allowed in values:
            if v is allowed or (type(v) is type(allowed) and v == allowed):
                return allowed
        raise Invalid(expected)

    check.expected = expected
    return check


def boolean():
    """``True`` or ``False``."""
    expected = "True or False"

    def check(v):
        if isinstance(v, bool):
            return v
        raise Invalid(expected)

    check.expected = expected
    return check


def real(minimum=None, exclusive=False, finite=True):
    """A real number (returned as float), optionally bounded below."""
    import math

    bound = ""
    if minimum is not None:
        bound = (" > " if exclusive else " >= ") + repr(minimum)
    expected = f"a finite number{bound}" if finite else f"a number{bound}"

    def check(v):
        if not _is_real(v):
            raise Invalid(expected)
        v = float(v)
        if finite and not math.isfinite(v):
            raise Invalid(expected)
        if minimum is not None and (v < minimum or (exclusive and v == minimum)):
            raise Invalid(expected)
        return v

    check.expected = expected
    return check


def optional(inner):
    """``None`` or whatever ``inner`` accepts."""
    expected = "None or " + getattr(inner, "expected", "a valid value")

    def check(v):
        if v is None:
            return None
        try:
            return inner(v)
        except Invalid:
            raise Invalid(expected) from None

    check.expected = expected
    return check


def key(name, check, default=REQUIRED, doc=""):
    """Shorthand for :class:`Key` taking ``type_doc`` from the validator."""
    return Key(name, check, default, doc, getattr(check, "expected", ""))
