"""shopper_vector (recency weighting, purchases, unknown items) and category_boost."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.shopper import category_boost, recency_weights, shopper_vector

EYE = np.eye(4, dtype=np.float32)  # item i's vector is the i-th unit vector


def test_recency_weights() -> None:
    np.testing.assert_allclose(recency_weights(3, 0.5), [1.0, 0.5, 0.25])
    np.testing.assert_allclose(recency_weights(3, 0.0), [1.0, 1 / 2, 1 / 3])
    np.testing.assert_allclose(recency_weights(2, 1.0), [1.0, 1.0])
    with pytest.raises(ValueError):
        recency_weights(2, 1.5)


def test_newest_view_weighs_most() -> None:
    q = shopper_vector(EYE, np.array([2, 1, 0]), recency_decay=0.5)
    assert q.dtype == np.float32 and q.shape == (4,)
    np.testing.assert_allclose(np.linalg.norm(q), 1.0, rtol=1e-6)
    assert q[2] > q[1] > q[0] > 0
    np.testing.assert_allclose(q[:3] / q[2], [0.25, 0.5, 1.0], rtol=1e-6)


def test_harmonic_weights_and_repeats_add_up() -> None:
    q = shopper_vector(EYE, np.array([0, 1, 0]), recency_decay=0.0)
    np.testing.assert_allclose(q[0] / q[1], (1 + 1 / 3) / (1 / 2), rtol=1e-6)


def test_unknown_items_are_skipped_but_keep_their_position() -> None:
    q = shopper_vector(EYE, np.array([-1, 3, 2]), recency_decay=0.5)
    np.testing.assert_allclose(q[3] / q[2], 2.0, rtol=1e-6)
    assert q[0] == 0 and q[1] == 0


def test_purchases_count_with_their_weight() -> None:
    q = shopper_vector(EYE, np.array([0]), np.array([1, -1]), purchase_weight=0.5)
    np.testing.assert_allclose(q[1] / q[0], 0.5, rtol=1e-6)
    q = shopper_vector(EYE, np.array([], dtype=np.int64), np.array([3]))
    np.testing.assert_allclose(q, [0, 0, 0, 1])


def test_nothing_usable_gives_zeros() -> None:
    assert not shopper_vector(EYE, np.array([-1, -1])).any()
    assert not shopper_vector(EYE, np.array([], dtype=np.int64)).any()


def test_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        shopper_vector(EYE, np.array([4]))


def test_category_boost() -> None:
    scores = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    out = category_boost(scores, np.array([0, 1, -1, 7]), np.array([1.0, 0.5]), weight=0.2)
    np.testing.assert_allclose(out, [0.7, 0.6, 0.5, 0.5], rtol=1e-6)
    assert scores[0] == 0.5, "input not modified"
    with pytest.raises(ValueError):
        category_boost(scores, np.array([0]), np.array([1.0]))
