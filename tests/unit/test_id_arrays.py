"""The sorted-id helpers agree with numpy's set functions (which they replace for speed at 10M ids)."""

import numpy as np
import pytest

from search.vectors.id_arrays import common, merged, minus, unique_inverse, unique_sorted


@pytest.mark.parametrize("seed", range(20))
def test_id_helpers_equal_numpy_set_functions(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 400))
    raw = rng.integers(1, 300, n)
    a = np.unique(raw)
    b = np.unique(rng.integers(1, 300, int(rng.integers(0, 400))))
    assert np.array_equal(unique_sorted(raw), a)
    assert np.array_equal(minus(a, b), np.setdiff1d(a, b))
    assert np.array_equal(common(a, b), np.intersect1d(a, b))
    assert np.array_equal(merged(a, b), np.union1d(a, b))
    assert unique_sorted(np.zeros(0, np.int64)).dtype == np.int64
    uniq, inverse = unique_inverse(raw)
    want_uniq, want_inverse = np.unique(raw, return_inverse=True)
    assert np.array_equal(uniq, want_uniq) and np.array_equal(inverse, want_inverse)
    assert np.array_equal(uniq[inverse], raw)
