"""Report metrics, code descriptions and the text-to-behaviour map on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from alignrec.data import ItemRecord
from alignrec.tokenizer.coldstart import TextToBehaviour
from alignrec.tokenizer.keywords import code_descriptions, item_words
from alignrec.tokenizer.metrics import (
    entropy_bits,
    level_statistics,
    neighbourhood_agreement,
    prefix_statistics,
    quantisation_errors,
)


def test_entropy_and_level_statistics() -> None:
    assert entropy_bits(np.array([1, 1, 1, 1])) == pytest.approx(2.0)
    assert entropy_bits(np.array([3, 0, 1])) == pytest.approx(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))
    codes = np.array([[0, 0], [0, 1], [1, 1], [1, 1]])
    stats = level_statistics(codes, [4, 2])
    assert stats[0]["used"] == 2 and stats[0]["utilisation"] == 0.5
    assert stats[0]["entropy_bits"] == pytest.approx(1.0) and stats[0]["normalised_entropy"] == pytest.approx(0.5)
    assert stats[1]["max_items"] == 3 and stats[1]["min_items"] == 1
    prefixes = prefix_statistics(codes, [4, 2])
    assert [p["distinct"] for p in prefixes] == [2, 3]
    assert prefixes[1]["collision_rate"] == pytest.approx(0.25) and prefixes[1]["largest_group"] == 2
    # max entropy of 3-of-4... normalised by log2(min(N, prod K)) = log2(4)
    assert prefixes[1]["normalised_entropy"] == pytest.approx(entropy_bits(np.array([1, 1, 2])) / 2)


def test_quantisation_errors_by_hand() -> None:
    latent = np.array([[1.0, 0.0], [-1.0, 0.0]])
    codebooks = [np.array([[0.5, 0.0], [-0.5, 0.0]]), np.array([[0.5, 0.0], [-0.5, 0.0]])]
    codes = np.array([[0, 0], [1, 1]])
    # total variance 1; after level 1 the error is 0.25 per item; after level 2 it is 0
    assert quantisation_errors(latent, codes, codebooks) == pytest.approx([0.25, 0.0])


def test_neighbourhood_agreement_by_hand() -> None:
    # two tight groups far apart; codes follow the groups except one item
    vectors = np.array([[1, 0], [1, 0.01], [1, -0.01], [0, 1], [0.01, 1], [-0.01, 1]] * 3, dtype=float)
    codes = np.array([[0], [0], [0], [1], [1], [1]] * 3)
    result = neighbourhood_agreement(vectors, codes, [2], neighbours=3, depths=(1,))
    assert result["prefix1"] == pytest.approx(1.0) and result["prefix1_chance"] == pytest.approx(0.5)
    shuffled = codes.copy()
    shuffled[0, 0] = 1
    assert neighbourhood_agreement(vectors, shuffled, [2], neighbours=3, depths=(1,))["prefix1"] < 1.0


def test_item_words_and_descriptions() -> None:
    assert item_words("The Guitar-strings 2000", "for the best acoustic guitar", ["Music"]) == {
        "guitar-strings", "acoustic", "guitar", "music"
    }
    items = [
        ItemRecord("Red guitar", "acoustic model"), ItemRecord("Blue guitar", "acoustic model"),
        ItemRecord("Snare drum", "model"), ItemRecord("Kick drum", "model"), ItemRecord("", ""),
    ]
    codes = np.array([[0], [0], [1], [1], [1]])
    out = code_descriptions(codes, [3], items, keywords_per_code=4)
    assert out["<a_0>"]["keywords"] == ["acoustic", "guitar"]  # "model" is everywhere: no lift
    assert out["<a_0>"]["description"] == 'Items about acoustic and guitar, e.g. "Red guitar"'
    assert out["<a_1>"]["keywords"] == ["drum"] and out["<a_1>"]["items"] == 3
    assert out["<a_2>"] == {"level": 0, "code": 2, "items": 0, "keywords": [], "description": ""}


def test_ridge_recovers_a_linear_map_and_loo_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    text = rng.standard_normal((40, 5))
    weight = rng.standard_normal((5, 3))
    target = text @ weight + 2.0
    fitted = TextToBehaviour.fit(text, target, alphas=(1e-8,))
    np.testing.assert_allclose(fitted.predict(text), target, atol=1e-3)
    noisy = target + 0.5 * rng.standard_normal(target.shape)
    model = TextToBehaviour.fit(text, noisy, alphas=(0.5,))
    # brute-force leave-one-out at the same alpha
    alpha = model.alpha
    errors = []
    for i in range(40):
        keep = np.arange(40) != i
        t, y = text[keep], noisy[keep]
        tm, ym = t.mean(0), y.mean(0)
        w = np.linalg.solve((t - tm).T @ (t - tm) + alpha * np.eye(5), (t - tm).T @ (y - ym))
        errors.append(((text[i] - tm) @ w + ym - noisy[i]) ** 2)
    variance = ((noisy - noisy.mean(0)) ** 2).sum(1).mean()
    assert model.loo_error == pytest.approx(float(np.sum(errors, axis=1).mean() / variance), rel=1e-6)
