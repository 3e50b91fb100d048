"""Sparse graph helpers: hand-computed normalisation, fast product == reference product."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignrec.collab.graph import (
    EdgeGraph,
    edge_dot,
    edge_dot_reference,
    edge_spmm,
    edge_spmm_reference,
    row_normalized_values,
)


def small_graph() -> EdgeGraph:
    # user 0 - item nodes 2, 3; user 1 - item node 3 (both directions)
    rows = np.array([0, 0, 1, 2, 3, 3])
    cols = np.array([2, 3, 3, 0, 0, 1])
    return EdgeGraph.from_edges(rows, cols, num_nodes=4)


def test_symmetric_normalisation_by_hand():
    graph = small_graph()
    # degrees: node0 2, node1 1, node2 1, node3 2 ; edge (r, c) -> 1 / sqrt(d_r d_c)
    expected = {(0, 2): 1 / np.sqrt(2), (0, 3): 1 / 2, (1, 3): 1 / np.sqrt(2), (2, 0): 1 / np.sqrt(2),
                (3, 0): 1 / 2, (3, 1): 1 / np.sqrt(2)}
    values = graph.symmetric_normalized_values()
    got = {(int(r), int(c)): float(v) for r, c, v in zip(graph.rows, graph.cols, values)}
    assert got == pytest.approx(expected)


def test_row_normalisation_by_hand():
    graph = small_graph()
    weights = torch.tensor([1.0, 3.0, 2.0, 5.0, 1.0, 1.0])  # CSR order: (0,2) (0,3) (1,3) (2,0) (3,0) (3,1)
    values = row_normalized_values(graph, weights)
    assert values.tolist() == pytest.approx([0.25, 0.75, 1.0, 1.0, 0.5, 0.5])


def test_duplicate_edges_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        EdgeGraph.from_edges(np.array([0, 0]), np.array([1, 1]), num_nodes=2)


@pytest.mark.parametrize("seed", [0, 1])
def test_edge_spmm_matches_reference_values_and_gradients(seed):
    generator = np.random.default_rng(seed)
    n = 30
    pairs = {(int(a), int(b)) for a, b in generator.integers(0, n, size=(120, 2))}
    rows, cols = map(np.array, zip(*sorted(pairs)))
    graph = EdgeGraph.from_edges(rows, cols, n)
    torch.manual_seed(seed)
    values = torch.rand(graph.num_edges, dtype=torch.float64, requires_grad=True)
    x = torch.randn(n, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(n, 5, dtype=torch.float64)

    fast = edge_spmm(graph, values, x)
    (fast * weight).sum().backward()
    fast_grads = values.grad.clone(), x.grad.clone()
    values.grad = x.grad = None
    reference = edge_spmm_reference(graph, values, x)
    (reference * weight).sum().backward()

    torch.testing.assert_close(fast, reference)
    torch.testing.assert_close(fast_grads[0], values.grad)
    torch.testing.assert_close(fast_grads[1], x.grad)
    # and both equal the dense product
    dense = torch.zeros(n, n, dtype=torch.float64)
    dense[graph.rows, graph.cols] = values.detach()
    torch.testing.assert_close(fast.detach(), dense @ x.detach())


@pytest.mark.parametrize("same_input", [False, True])
def test_edge_dot_matches_reference_values_and_gradients(same_input):
    generator = np.random.default_rng(3)
    n = 25
    pairs = {(int(a), int(b)) for a, b in generator.integers(0, n, size=(90, 2))}
    rows, cols = map(np.array, zip(*sorted(pairs)))
    graph = EdgeGraph.from_edges(rows, cols, n)
    torch.manual_seed(0)
    a = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    b = a if same_input else torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(graph.num_edges, dtype=torch.float64)

    fast = edge_dot(graph, a, b)
    (fast * weight).sum().backward()
    fast_grads = [a.grad.clone()] + ([] if same_input else [b.grad.clone()])
    a.grad = None
    if not same_input:
        b.grad = None
    reference = edge_dot_reference(graph, a, b)
    (reference * weight).sum().backward()
    torch.testing.assert_close(fast, reference)
    torch.testing.assert_close(fast_grads[0], a.grad)
    if not same_input:
        torch.testing.assert_close(fast_grads[1], b.grad)
    # by hand: edge e is a[rows[e]] . b[cols[e]]
    e = 5
    assert float(fast[e].detach()) == pytest.approx(float((a[graph.rows[e]] @ b[graph.cols[e]]).detach()))
