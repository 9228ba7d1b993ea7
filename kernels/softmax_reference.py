"""numpy reference for :mod:`refute.kernels.softmax` (masked softmax and log-softmax).

Independent of the Triton kernels (it never calls them); it is built from the
numpy building blocks of refute's numeric contract: :mod:`reduce_reference`
(exact max and fixed-point sum) and :mod:`mathlib_reference` (exp, log). Every
array here is 2-D ``(rows, n)``; ``keep`` is a boolean array of the same shape
(True = the entry takes part). For one row, with K the kept entries:

* ``m = row_max(where(keep, x, -inf))``: the exact max of the kept entries
  (-0 < +0; a kept NaN gives NaN). A masked entry counts as -inf, which never
  beats a kept one, so m is the max over K whenever K is non-empty.
* ``e_i = exp(x_i - m)`` for i in K, ``+0`` otherwise (so ``0 <= e_i <= 1``).
* ``s = exact_sum(e)``: the fixed-point sum; masked entries add 0 and, being 0,
  cannot change its scale.
* softmax: ``p_i = div(e_i, s)`` for i in K, ``+0`` otherwise.
* log_softmax: ``(x_i - m) - log(s)`` for i in K, ``-inf`` otherwise.

Every NaN in a result is the canonical NaN 0x7FC00000. A row with a kept NaN,
a kept +inf, or only -inf kept entries has ``x - m`` NaN somewhere (NaN - m,
inf - inf, -inf + inf), so s and every kept output are NaN, as in torch. A row
with no kept entry gives +0 (softmax) / -inf (log-softmax) everywhere.
"""

from __future__ import annotations

import numpy as np

from refute.kernels.bits_reference import bits_f32, f32_bits
from refute.kernels.mathlib_reference import exp, log
from refute.kernels.reduce_reference import CANONICAL_NAN_BITS, exact_sum, row_max

ABS_MASK = np.int32(0x7FFFFFFF)
POS_INF_BITS = np.int32(0x7F800000)
NEG_INF = np.float32(-np.inf)
ZERO = np.float32(0.0)


def canonicalize_nan(r: np.ndarray) -> np.ndarray:
    """Every NaN of float32 ``r`` replaced by the canonical NaN 0x7FC00000."""
    b = f32_bits(r)
    return bits_f32(np.where((b & ABS_MASK) > POS_INF_BITS, CANONICAL_NAN_BITS, b).astype(np.int32))


def _keep_all(x: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    return np.ones(x.shape, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)


def softmax_stats(x: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m (rows,), e (rows, n), s (rows,)) of the masked softmax of 2-D ``x``."""
    from refute.kernels import native_reference  # imported here: it imports mathlib_reference

    if (lib := native_reference.library()) is not None:
        return native_reference.softmax_stats(lib, x, keep)
    with np.errstate(all="ignore"):
        m = row_max(np.where(keep, x, NEG_INF))
        e = np.where(keep, exp(x - m[:, None]), ZERO)
        return m, e, exact_sum(e)


def softmax(x: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Masked softmax over the last axis of float32 ``x`` (rows, n)."""
    keep = _keep_all(x, keep)
    from refute.kernels import native_reference

    if (lib := native_reference.library()) is not None:
        return native_reference.softmax(lib, x, keep)
    _, e, s = softmax_stats(x, keep)
    with np.errstate(all="ignore"):
        return np.where(keep, canonicalize_nan(e / s[:, None]), ZERO)


def log_softmax(x: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Masked log-softmax over the last axis of float32 ``x`` (rows, n)."""
    keep = _keep_all(x, keep)
    m, _, s = softmax_stats(x, keep)
    with np.errstate(all="ignore"):
        return np.where(keep, canonicalize_nan((x - m[:, None]) - log(s)[:, None]), NEG_INF)
