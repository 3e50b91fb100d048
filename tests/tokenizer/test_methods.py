"""The three tokenizer methods: known clusters, determinism, balance, the losses, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignrec.tokenizer.methods import TOKENIZERS, TrainingInputs, _alignment_losses, build_tokenizer, cell_means
from alignrec.tokenizer.model import TokenizerModel

from tokenizer_helpers import cluster_vectors, same_partition, small_config


def _fit(method: str, vectors: np.ndarray, **overrides: object):
    config = small_config(method=method, **overrides)
    return build_tokenizer(config).fit(TrainingInputs(vectors=vectors))


def test_registry_has_the_three_methods() -> None:
    assert {"alignment", "rqvae", "rqkmeans"} <= set(TOKENIZERS)
    with pytest.raises(ValueError, match="method"):
        small_config(method="nope")


@pytest.mark.parametrize(
    "method,overrides",
    [("alignment", {}), ("alignment", {"balance": "none"}), ("rqkmeans", {}), ("alignment", {"distance": "cosine"})],
)
def test_well_separated_clusters_are_recovered_exactly(method: str, overrides: dict) -> None:
    vectors, labels = cluster_vectors(clusters=8, per_cluster=8)
    result = _fit(method, vectors, levels=1, codebook_size=8, **overrides)
    codes = result.quantizer.quantize(vectors)
    assert same_partition(codes[:, 0], labels)
    assert np.bincount(codes[:, 0], minlength=8).tolist() == [8] * 8


def test_balanced_assignment_holds_capacities_and_separates_prefixes() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((60, 4)).astype(np.float32) ** 3  # skewed: nearest codes crowd
    result = _fit("alignment", vectors, levels=2, codebook_size=8)
    codes = result.quantizer.quantize(vectors)
    # 60 items / 8 codes -> at most ceil(60 / 8) = 8 items per level-1 code (solved exactly)
    assert np.bincount(codes[:, 0], minlength=8).max() <= 8
    # each level-1 group (<= 8 items) spreads over distinct level-2 codes: no collision at L = 2
    assert len({tuple(r) for r in codes.tolist()}) == 60
    nearest = _fit("alignment", vectors, levels=2, codebook_size=8, balance="none").quantizer.quantize(vectors)
    assert len({tuple(r) for r in nearest.tolist()}) < 60  # the plain rule does collide here


@pytest.mark.parametrize("method", ["alignment", "rqvae", "rqkmeans"])
def test_same_seed_same_codes(method: str) -> None:
    vectors, _ = cluster_vectors(clusters=6, per_cluster=5, seed=3, noise=1.0)
    first = _fit(method, vectors, seed=11).quantizer.quantize(vectors) if method != "rqvae" else None
    if method == "rqvae":
        a, b = _fit(method, vectors, seed=11), _fit(method, vectors, seed=11)
        for (wa, ba), (wb, bb) in zip(a.encoder, b.encoder):
            np.testing.assert_array_equal(wa, wb)
            np.testing.assert_array_equal(ba, bb)
        for ca, cb in zip(a.quantizer.codebooks, b.quantizer.codebooks):
            np.testing.assert_array_equal(ca, cb)
        return
    second = _fit(method, vectors, seed=11).quantizer.quantize(vectors)
    assert np.array_equal(first, second)


def test_cell_means_equal_the_end_point_of_gradient_descent() -> None:
    """Reference (Adam on the summed behaviour loss, codes fixed) vs the closed form."""
    vectors, _ = cluster_vectors(clusters=4, per_cluster=6, dim=4, seed=2, noise=1.0)
    rng = np.random.default_rng(0)
    codebooks = [rng.standard_normal((4, 4)).astype(np.float32) for _ in range(2)]
    codes = rng.integers(0, 4, size=(len(vectors), 2))
    codes[:4, 0] = np.arange(4)  # every code used
    codes[:4, 1] = np.arange(4)
    closed, loss = cell_means(vectors, codes, codebooks, "l2")
    params = [torch.nn.Parameter(torch.from_numpy(c.copy())) for c in codebooks]
    optimizer = torch.optim.Adam(params, lr=0.05)
    x, c = torch.from_numpy(vectors), torch.from_numpy(codes)
    for _ in range(2000):
        behaviour, _ = _alignment_losses(x, c, params, "l2")
        optimizer.zero_grad()
        behaviour.backward()
        optimizer.step()
    # level 1 is fit first; level 2 then fits the residuals of the *final* level-1 codes
    for got, want in zip(params, closed):
        np.testing.assert_allclose(got.detach().numpy(), want, atol=2e-3)
    assert float(behaviour.detach()) == pytest.approx(loss, rel=1e-3)


def test_infonce_llm_loss_matches_a_hand_computation() -> None:
    # two levels, K = 2, e = 2; items 0 and 1 share level-1 code 0, item 2 has code 1
    codebooks = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.5, 0.5], [-0.5, 0.5]])]
    codes = torch.tensor([[0, 0], [0, 1], [1, 0]])
    x = torch.zeros(3, 2)
    text = torch.tensor([[1.0, 0.2], [0.3, 1.0], [0.1, 1.0]])
    projection = torch.nn.Identity()
    tau = 0.5
    _, llm = _alignment_losses(
        x, codes, codebooks, "l2", projection=projection, text=text, text_index=torch.arange(3), loss="infonce", temperature=tau
    )

    def normalise(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    t = normalise(text.numpy())
    # level 1: distinct prefixes (0) and (1) with vectors e1_0, e1_1
    cands1 = normalise(np.array([[1.0, 0.0], [0.0, 1.0]]))
    target1 = [0, 0, 1]
    # level 2: prefixes (0,0), (0,1), (1,0) -> cumulative vectors
    cands2 = normalise(np.array([[1.5, 0.5], [0.5, 0.5], [0.5, 1.5]]))
    target2 = [0, 1, 2]
    expected = 0.0
    for cands, target in ((cands1, target1), (cands2, target2)):
        logits = t @ cands.T / tau
        log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        expected += -np.mean(log_softmax[np.arange(3), target]) / 2  # mean over the two levels
    assert float(llm) == pytest.approx(expected, rel=1e-5)


def test_llm_term_trains_projection_and_codebooks() -> None:
    vectors, labels = cluster_vectors(clusters=4, per_cluster=8, dim=4, seed=5, noise=0.5)
    rng = np.random.default_rng(0)
    text = (np.eye(6)[labels % 4] * 3 + 0.1 * rng.standard_normal((len(labels), 6))).astype(np.float32)
    config = small_config(method="alignment", levels=2, codebook_size=4, llm_weight=1.0, rounds=3, steps_per_round=20)
    result = build_tokenizer(config).fit(TrainingInputs(vectors=vectors, text=text, text_rows=np.arange(len(labels))))
    assert result.info["llm_alignment"] is True and result.info["llm_items"] == len(labels)
    assert set(result.extra_tensors) == {"llm_projection.weight", "llm_projection.bias"}
    losses = [h["llm_loss"] for h in result.history]
    assert losses[-1] < losses[0]  # the projection learns to find the items' codes from text


def test_model_save_load_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 6)).astype(np.float32)
    for method in ("alignment", "rqvae"):
        result = _fit(method, vectors, levels=3, codebook_size=4)
        model = TokenizerModel(method, result.quantizer, vectors.mean(0), 2.0, encoder=result.encoder, metadata={"k": "v"})
        model.save(tmp_path / method, extra={"x": np.arange(3.0)})
        loaded = TokenizerModel.load(tmp_path / method)
        assert loaded.method == method and loaded.metadata == {"k": "v"} and loaded.codebook_sizes == [4, 4, 4]
        assert np.array_equal(loaded.encode(vectors), model.encode(vectors))
        for a, b in zip(model.quantizer.prices, loaded.quantizer.prices):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a.values, b.values)
    assert (loaded.encoder is not None) and len(loaded.encoder) == 2  # rqvae: 6 -> 16 -> 4


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_numpy_text_projection_matches_the_trained_torch_module(kind: str) -> None:
    from alignrec.tokenizer.coldstart import TextProjection
    from alignrec.tokenizer.methods import _build_projection

    vectors, labels = cluster_vectors(clusters=4, per_cluster=4, dim=4, seed=1, noise=0.5)
    text = np.eye(6, dtype=np.float32)[labels % 4] + 0.1
    config = small_config(method="alignment", llm_weight=1.0, llm_projection=kind, rounds=1, steps_per_round=2)
    result = build_tokenizer(config).fit(TrainingInputs(vectors=vectors, text=text, text_rows=np.arange(len(labels))))
    module = _build_projection(kind, 6, 4)
    module.load_state_dict({k.split(".", 1)[1]: torch.from_numpy(v) for k, v in result.extra_tensors.items()})
    extra = {**result.extra_tensors, "llm_text.mean": np.full(6, 0.5, np.float32), "llm_text.scale": np.array([2.0])}
    projection = TextProjection.from_extra(extra)
    with torch.no_grad():
        want = torch.nn.functional.normalize(module(torch.from_numpy((text - 0.5) / 2.0)), dim=1).numpy()
    np.testing.assert_allclose(projection.directions(text), want, atol=1e-5)
