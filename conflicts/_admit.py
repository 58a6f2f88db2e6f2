"""Greedy admission: the batch-resolution rule shared by every pairwise conflict type.

Candidates are numbered in precedence order (0 first). Walking that order, a candidate is
admitted unless it is blocked (it conflicts with committed state) or it conflicts with a
candidate already admitted. The result depends only on the precedence order and the
conflict relation, never on arrival order, and no two admitted candidates conflict.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


def admit(blocked: Mask, first: I64, second: I64) -> tuple[Mask, dict[int, list[int]]]:
    """Admit greedily in rank order.

    ``blocked``: per rank, whether committed state rules the candidate out. Conflict edges
    are ``(first[k], second[k])`` with ``first[k] < second[k]`` (ranks). Returns the
    admitted mask and, for each candidate that lost to other candidates (not blocked), the
    ranks of the admitted candidates it conflicts with, ascending.

    Only candidates with a higher-precedence conflict are visited in Python; the rest are
    decided by the mask alone.
    """
    admitted = ~blocked
    beaten: dict[int, list[int]] = {}
    if len(first) == 0:
        return admitted, beaten
    order = np.lexsort((first, second))
    lower = first[order].tolist()
    upper = second[order]
    starts = np.flatnonzero(np.r_[True, upper[1:] != upper[:-1]])
    ends = np.r_[starts[1:], len(upper)].tolist()
    ok = admitted.tolist()
    for j, s, e in zip(upper[starts].tolist(), starts.tolist(), ends, strict=True):
        if ok[j]:
            winners = [i for i in lower[s:e] if ok[i]]
            if winners:
                ok[j] = False
                beaten[j] = winners
    return np.array(ok, dtype=bool), beaten
