"""Classifier two-sample test: known answers on Gaussians, shapes, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from caloforge.evaluation import (
    CLASSIFIER_PRESETS,
    InsufficientDataError,
    classifier_test,
    low_level_inputs,
)


def test_identical_distributions_give_auc_half_and_jsd_zero():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1500, 4)), rng.normal(size=(1500, 4))
    r = classifier_test(a, b, hidden=(16, 8), epochs=4, seed=1)
    assert abs(r.auc - 0.5) < 0.06
    assert abs(r.jsd) < 0.05
    assert r.n_per_class == 1500 and r.hidden == (16, 8)
    assert r.weights_ref.shape[0] + r.weights_gen.shape[0] == 600
    assert np.all(r.weights_ref > 0)


def test_separated_distributions_are_found():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1000, 3))
    b = rng.normal(size=(1200, 3)) + np.array([3.0, 0.0, 0.0])
    r = classifier_test(a, b, hidden=(32, 16, 8), epochs=5, seed=0)
    # Gaussians 3 sigma apart: AUC = Phi(3 / sqrt 2) = 0.983
    assert r.auc > 0.95
    assert r.jsd > 0.45  # the Bayes-optimal JSD of this pair is about 0.6
    assert r.n_per_class == 1000
    # weights w = C / (1 - C): generated showers get large weights, reference small ones
    assert np.median(r.weights_gen) > 1 > np.median(r.weights_ref)
    assert 1 <= r.best_epoch <= 5


def test_presets_and_bad_input():
    assert CLASSIFIER_PRESETS["official"].hidden == (2048, 2048, 2048)
    assert CLASSIFIER_PRESETS["official"].epochs == 50
    assert CLASSIFIER_PRESETS["official"].batch_size == 1000
    assert CLASSIFIER_PRESETS["official"].lr == 2e-4
    x = np.zeros((200, 3))
    with pytest.raises(ValueError, match="preset"):
        classifier_test(x, x, preset="gpu")
    with pytest.raises(ValueError):
        classifier_test(x, np.zeros((200, 4)))
    with pytest.raises(InsufficientDataError):
        classifier_test(x[:20], x[:20])


def test_low_level_inputs():
    e = np.array([100.0, 1000.0])
    s = np.array([[10.0, 0.0], [0.0, 500.0]])
    out = low_level_inputs(e, s)
    np.testing.assert_allclose(out, [[2.0, 0.1, 0.0], [3.0, 0.0, 0.5]], rtol=1e-6)
    assert out.dtype == np.float32
