"""Results derived from a spec and an input shape, remembered across calls.

Shape rules, plans and tables depend only on the spec and the input shape; rebuilding
them in Python on every call costs far more than the kernel of a small call. The
values kept here are never changed once built (tuples, read-only arrays, plan
objects whose attributes are set once), so sharing them between calls and threads
is safe. Keys hold what the value depends on: the op, :func:`spec_key` of the spec,
the input shape and dtype, and any module constant that tunes the result.
"""
from __future__ import annotations

import copy

_CACHE = {}
_CACHE_SIZE = 256


def cached(key, build, keep=None):
    """``build()``, remembered under ``key`` (a few hundred entries at most), unless
    ``keep(value)`` is false (values too large to hold on to) or ``key`` cannot be
    hashed (a shape given as a list, say: then ``build()`` runs every time).

    Examples
    --------
    >>> from pyconv._memo import cached
    >>> cached(("doc example", 3), lambda: 3 * 3)
    9
    """
    try:
        return _CACHE[key]
    except KeyError:
        pass
    except TypeError:   # unhashable: nothing to remember it by
        return build()
    value = build()
    if keep is not None and not keep(value):
        return value
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    _CACHE[key] = value
    return value


_SPEC_KEYS = {}


def spec_key(spec):
    """A hashable key for a normalised spec dict, remembered per dict object.

    An op receives the same spec dict on every call of one ``Conv``; the key is
    rebuilt only if that dict is a new one or has changed since (compared with a
    private copy), so a call costs one lookup and one dict comparison.

    Examples
    --------
    >>> from pyconv._memo import spec_key
    >>> spec_key({"kernel_size": [3, 3], "stride": 1})
    (('kernel_size', (3, 3)), ('stride', 1))
    """
    entry = _SPEC_KEYS.get(id(spec))
    if entry is not None and entry[0] is spec and entry[1] == spec:
        return entry[2]
    key = freeze(sorted(spec.items()))
    if len(_SPEC_KEYS) >= _CACHE_SIZE:
        _SPEC_KEYS.clear()
    _SPEC_KEYS[id(spec)] = (spec, copy.deepcopy(spec), key)
    return key


def freeze(value):
    """A hashable copy of a spec value (lists become tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value
