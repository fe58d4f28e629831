"""Contribution scores: formulas on small hand-checked inputs, shapes, seeds."""

import pytest

from d2ft import Op
from d2ft.scores import (Scores, ema_update, fill_block_mean, fisher, magnitude, normalise_per_block, random_scores,
                         synthetic)


def test_magnitude_is_abs_sum_normalised_per_block():
    weights = [[[1.0, -1.0], [-2.0]], [[0.5], [0.5]]]
    assert magnitude(weights) == [[0.5, 0.5], [0.5, 0.5]]
    assert magnitude([[[3.0], [-1.0]]]) == [[0.75, 0.25]]


def test_fisher_ema_and_block_mean():
    grads = [[[1.0, 2.0], None, [3.0]]]
    f = fisher(grads)
    assert f == [[5.0, None, 9.0]]
    ema = ema_update(None, f)
    ema = ema_update(ema, [[1.0, None, None]], decay=0.5)
    assert ema == [[3.0, None, 9.0]]
    assert fill_block_mean(ema) == [[3.0, 6.0, 9.0]]


def test_values_follow_the_method():
    s = Scores([[0.25, 0.75]], [[0.5, 0.1]])
    assert s.value(0, 0, 0, Op.FULL) == 0.75
    assert s.value(0, 0, 1, Op.FORWARD_ONLY) == 0.75
    assert s.value(0, 0, 1, Op.SKIP) == 0
    assert s.swapped().value(0, 0, 0, Op.FORWARD_ONLY) == 0.5


def test_synthetic_and_random_are_seeded_and_shaped():
    a, b = synthetic(4, 3, seed=7), synthetic(4, 3, seed=7)
    assert a == b and a != synthetic(4, 3, seed=8)
    for row in a.forward:
        assert sum(row) == pytest.approx(1.0)
    per_mb = synthetic(4, 3, seed=1, micro_batches=2)
    per_mb.check_shape(4, 3, 2)
    assert per_mb.per_micro_batch
    assert random_scores(2, 2, seed=3) == random_scores(2, 2, seed=3)
    assert Scores.from_json(a.to_json()) == a


def test_bad_scores():
    with pytest.raises(ValueError, match="finite and >= 0"):
        Scores([[-1.0]], [[0.0]])
    with pytest.raises(ValueError, match="differs"):
        Scores([[1.0, 1.0]], [[1.0]])
    with pytest.raises(ValueError, match="ragged"):
        Scores([[1.0, 1.0], [1.0]], [[1.0, 1.0], [1.0]])
    with pytest.raises(ValueError, match=r"expected \(layers, heads\) = \(2, 3\)"):
        synthetic(2, 2, seed=0).check_shape(2, 3, 1)
    assert normalise_per_block([[0.0, 0.0]]) == [[0.5, 0.5]]
