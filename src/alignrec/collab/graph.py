"""The user–item graph as sparse tensors, and a sparse–dense product whose edge weights learn.

Nodes are users ``0..U-1`` followed by items ``U..U+I-1``; every training pair (u, i) gives
the two directed edges u -> U+i and U+i -> u. Edges are kept in CSR order (by row, then
column) so that a weight vector over edges can be turned into a CSR matrix without sorting.

:func:`edge_spmm` computes ``A(values) @ x`` with gradients for both ``values`` and ``x``
through a custom autograd function (CSR products forward and backward, one gather for the
edge gradients); :func:`edge_spmm_reference` is the plain scatter-add version it is tested
against. On a Games-sized graph the CSR path is about 5x faster than scatter-add and avoids
PyTorch's very slow gradient for COO values.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from alignrec.collab.data import TrainingData



def _csr(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    # CSR tensors are "beta" in PyTorch and warn on construction; the operations used here
    # (construction from valid CSR arrays, sparse @ dense) are stable, so the warning is noise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, cols, values, (size, size), check_invariants=False)


@dataclass
class EdgeGraph:
    """Fixed sparsity structure of an N x N graph in CSR order.

    ``rows``/``cols`` (E,) hold the edges sorted by (row, col); ``crow`` (N + 1,) is the CSR
    row pointer; ``transpose_order`` (E,) lists edge indices in CSR order of the transpose
    and ``transpose_crow``/``transpose_cols`` its structure.
    """

    num_nodes: int
    rows: torch.Tensor  # (E,) int64
    cols: torch.Tensor  # (E,) int64
    crow: torch.Tensor  # (N + 1,) int64
    transpose_order: torch.Tensor  # (E,) int64
    transpose_crow: torch.Tensor  # (N + 1,) int64
    transpose_cols: torch.Tensor  # (E,) int64

    @classmethod
    def from_edges(cls, rows: np.ndarray, cols: np.ndarray, num_nodes: int) -> EdgeGraph:
        """Build from directed edges (duplicates are an error: weights would silently double)."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        keys = rows * num_nodes + cols
        order = np.argsort(keys, kind="stable")
        if keys.size and np.any(np.diff(keys[order]) == 0):
            raise ValueError("duplicate edges in graph")
        rows, cols = rows[order], cols[order]
        crow = np.zeros(num_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=num_nodes), out=crow[1:])
        t_order = np.lexsort((rows, cols))  # sort by col, then row = CSR order of the transpose
        t_crow = np.zeros(num_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(cols, minlength=num_nodes), out=t_crow[1:])
        return cls(
            num_nodes=num_nodes,
            rows=torch.from_numpy(rows),
            cols=torch.from_numpy(cols),
            crow=torch.from_numpy(crow),
            transpose_order=torch.from_numpy(t_order),
            transpose_crow=torch.from_numpy(t_crow),
            transpose_cols=torch.from_numpy(rows[t_order]),
        )

    @property
    def num_edges(self) -> int:
        return int(self.rows.shape[0])

    def degree(self) -> torch.Tensor:
        """Number of out-edges of each node (N,) float32."""
        return torch.diff(self.crow).to(torch.float32)

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """The CSR matrix with these edge values (E,) (no autograd; see :func:`edge_spmm`)."""
        return _csr(self.crow, self.cols, values, self.num_nodes)

    def pattern(self, dtype: torch.dtype) -> torch.Tensor:
        """The CSR matrix with every stored value 1 (the sparsity pattern for sampled products)."""
        cache = self.__dict__.setdefault("_patterns", {})
        if dtype not in cache:
            cache[dtype] = self.csr(torch.ones(self.num_edges, dtype=dtype))
        return cache[dtype]

    def csr_transpose(self, values: torch.Tensor) -> torch.Tensor:
        return _csr(self.transpose_crow, self.transpose_cols, values[self.transpose_order], self.num_nodes)

    def symmetric_normalized_values(self) -> torch.Tensor:
        """Edge values of ``D^-1/2 A D^-1/2`` for a 0/1 adjacency A (isolated nodes get 0)."""
        degree = self.degree()
        inv_sqrt = torch.where(degree > 0, degree.clamp(min=1).pow(-0.5), torch.zeros_like(degree))
        return inv_sqrt[self.rows] * inv_sqrt[self.cols]


def user_item_graph(
    data: TrainingData, extra_users: np.ndarray | None = None, extra_items: np.ndarray | None = None
) -> EdgeGraph:
    """The bipartite graph of the unique training pairs (both directions), U + I nodes.

    ``extra_users``/``extra_items`` add more (user, item) pairs (duplicates of training pairs
    are merged) — used to score the test split with each user's validation item in the graph.
    """
    users, items = data.interactions
    if extra_users is not None and extra_items is not None:
        keys = np.unique(np.concatenate([users * data.num_items + items,
                                         np.asarray(extra_users) * data.num_items + np.asarray(extra_items)]))
        users, items = keys // data.num_items, keys % data.num_items
    item_nodes = items + data.num_users
    rows = np.concatenate([users, item_nodes])
    cols = np.concatenate([item_nodes, users])
    return EdgeGraph.from_edges(rows, cols, data.num_users + data.num_items)


class _EdgeSpmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: torch.Tensor, x: torch.Tensor, graph: EdgeGraph) -> torch.Tensor:  # type: ignore[override]
        ctx.graph = graph
        ctx.save_for_backward(values, x)
        return graph.csr(values.detach()) @ x.detach()  # (N, d)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        values, x = ctx.saved_tensors
        graph: EdgeGraph = ctx.graph
        grad_values = grad_x = None
        grad_out = grad_out.contiguous()
        if ctx.needs_input_grad[1]:
            grad_x = graph.csr_transpose(values.detach()) @ grad_out  # (N, d) = A^T g
        if ctx.needs_input_grad[0]:
            # d(sum g * (A x)) / dA[r, c] = <g[r], x[c]>, only on the stored edges
            grad_values = _sampled_dot(graph, grad_out, x.detach())
        return grad_values, grad_x, None


def _sampled_dot(graph: EdgeGraph, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``<a[rows[e]], b[cols[e]]>`` for every edge e (E,), without autograd."""
    return torch.sparse.sampled_addmm(graph.pattern(a.dtype), a, b.T, beta=0.0).values()


class _EdgeDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, graph: EdgeGraph) -> torch.Tensor:  # type: ignore[override]
        ctx.graph = graph
        ctx.save_for_backward(a, b)
        return _sampled_dot(graph, a.detach(), b.detach())  # (E,)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        a, b = ctx.saved_tensors
        graph: EdgeGraph = ctx.graph
        grad_out = grad_out.contiguous()
        # out[e] = <a[r_e], b[c_e]>  =>  grad_a = G b and grad_b = G^T a, G = CSR(grad_out)
        grad_a = graph.csr(grad_out) @ b.detach() if ctx.needs_input_grad[0] else None
        grad_b = graph.csr_transpose(grad_out) @ a.detach() if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None


def edge_dot(graph: EdgeGraph, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One dot product per edge, ``<a[row], b[col]>`` (E,); differentiable in ``a`` and ``b``. a, b: (N, d)."""
    if not (a.requires_grad or b.requires_grad):
        return _sampled_dot(graph, a, b)
    return _EdgeDot.apply(a, b, graph)


def edge_dot_reference(graph: EdgeGraph, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Plain gather version of :func:`edge_dot` (the reference it is tested against)."""
    return (a.index_select(0, graph.rows) * b.index_select(0, graph.cols)).sum(1)


def edge_spmm(graph: EdgeGraph, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A @ x`` for the graph with edge weights ``values`` (E,); differentiable in both. (N, d)"""
    if values.shape != (graph.num_edges,):
        raise ValueError(f"expected {graph.num_edges} edge values, got shape {tuple(values.shape)}")
    if not (values.requires_grad or x.requires_grad):
        return graph.csr(values) @ x
    return _EdgeSpmm.apply(values, x, graph)


def edge_spmm_reference(graph: EdgeGraph, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Plain scatter-add ``A @ x`` (the reference :func:`edge_spmm` is tested against)."""
    out = torch.zeros(graph.num_nodes, x.shape[1], dtype=x.dtype)
    return out.index_add(0, graph.rows, values[:, None] * x.index_select(0, graph.cols))


def row_normalized_values(graph: EdgeGraph, weights: torch.Tensor) -> torch.Tensor:
    """Edge values of ``D_w^-1 W`` (each row sums to 1; rows without weight give 0). (E,)"""
    row_sums = torch.zeros(graph.num_nodes, dtype=weights.dtype).index_add(0, graph.rows, weights)
    inverse = torch.where(row_sums > 0, 1.0 / row_sums.clamp(min=1e-12), torch.zeros_like(row_sums))
    return inverse[graph.rows] * weights
