"""Assigning vectors to codes: distances, prefix groups, balanced (capacity-constrained)
assignment with its dual prices, and Sinkhorn-Knopp.

Pure functions on numpy arrays (float64 for everything that decides a code, so that training
and inference compute bit-identical costs). Notation: N vectors, K codes, a cost matrix
``C`` (N, K) and, per vector, a *group* (the prefix of codes it already has; at level 1 every
vector is in the one empty-prefix group).

Balanced assignment. Within group g (n_g vectors), code k may take at most
``cap_g = ceil(capacity_factor * n_g / K)`` vectors. The assignment minimises the summed cost
under these capacities (a transportation problem)::

    min_{a}  sum_i C[i, a_i]   s.t.  |{i in g : a_i = k}| <= cap_g   for every group g, code k

Its LP dual gives one *price* per (group, code), ``p[g, k] >= 0`` (zero for codes with room
left), such that every vector's assigned code is the cheapest after adding the prices::

    a_i = argmin_k ( C[i, k] + p[g_i, k] )                                       (*)

Rule (*) is what a trained quantizer applies at inference, so a training item's embedding
is mapped back to its training-time code, and a new item is steered away from crowded codes
of its prefix group exactly as the training items were. Two solvers:

- small groups (levels >= 2, or tiny data): the exact transportation problem by
  ``scipy.optimize.linear_sum_assignment`` on the capacity-expanded cost matrix, then prices
  from shortest paths over the "who could move where" graph, shifted so that every vector
  prefers its own code *strictly* (so (*) reproduces the assignment);
- one large group (level 1 of a big catalogue): an epsilon-scaling Jacobi auction
  (Bertsekas) with capacities, whose final prices are (*)'s prices; vectors that are within
  epsilon of a tie may then pick a neighbouring code, which only loosens the balance a little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Distance = Literal["l2", "cosine"]

# A capacity-expanded LAP above this many matrix entries is solved by the auction instead.
LAP_MAX_ENTRIES = 6_000_000


def pairwise_cost(
    vectors: np.ndarray, codebook: np.ndarray, distance: Distance = "l2", dtype: type = np.float64
) -> np.ndarray:
    """Cost of assigning each vector to each code: (N, d) x (K, d) -> (N, K).

    ``l2``: squared Euclidean distance; ``cosine``: 1 - cosine similarity (zero vectors have
    similarity 0 with everything). Anything that decides a stored code uses float64; the
    float32 variant is for the assignment steps inside training loops.
    """
    x = np.asarray(vectors, dtype=dtype)
    c = np.asarray(codebook, dtype=dtype)
    if distance == "l2":
        cost = (x * x).sum(1)[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
        return np.maximum(cost, 0.0)
    if distance == "cosine":
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        cn = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        return 1.0 - xn @ cn.T
    raise ValueError(f"unknown distance {distance!r}; expected 'l2' or 'cosine'")


def prefix_keys(codes: np.ndarray, sizes: list[int] | tuple[int, ...]) -> np.ndarray:
    """One int64 per row naming its code prefix (mixed radix over ``sizes``): (N, l) -> (N,).

    An empty prefix (l = 0) maps every row to key 0.
    """
    codes = np.asarray(codes, dtype=np.int64)
    keys = np.zeros(codes.shape[0], dtype=np.int64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (N, l), got {codes.shape}")
    if math.prod(int(s) for s in sizes[: codes.shape[1]]) >= 2**62:
        raise ValueError("code space too large for int64 prefix keys")
    for level in range(codes.shape[1]):
        keys = keys * int(sizes[level]) + codes[:, level]
    return keys


def group_capacities(group_sizes: np.ndarray, num_codes: int, capacity_factor: float) -> np.ndarray:
    """``ceil(capacity_factor * n_g / K)`` (at least 1; and enough for every member)."""
    sizes = np.asarray(group_sizes, dtype=np.int64)
    cap = np.ceil(capacity_factor * sizes / num_codes - 1e-9).astype(np.int64)
    needed = -(-sizes // num_codes)  # a capacity below ceil(n_g / K) cannot hold the group
    return np.maximum(np.maximum(cap, needed), 1)


@dataclass
class BalancedAssignment:
    """Result of :func:`balanced_assign`: codes, prices (G, K) and how it was solved."""

    codes: np.ndarray  # (N,) int64, the capacity-feasible assignment
    prices: np.ndarray  # (G, K) float64, prices of rule (*)
    solver: str  # "lap", "auction" or "lap+auction"
    rounds: int = 0  # auction rounds (0 for LAP only)


def assign_with_prices(cost: np.ndarray, groups: np.ndarray, prices: np.ndarray | None) -> np.ndarray:
    """Rule (*): ``argmin_k C[i, k] + p[g_i, k]`` (ties -> lowest code index)."""
    if prices is None:
        return np.asarray(cost).argmin(1)
    return (cost + prices[groups]).argmin(1)


def balanced_assign(
    cost: np.ndarray,
    groups: np.ndarray,
    capacity: np.ndarray,
    *,
    auction_epsilon: float = 1e-3,
    warm_prices: np.ndarray | None = None,
    lap_max_entries: int = LAP_MAX_ENTRIES,
    with_prices: bool = True,
) -> BalancedAssignment:
    """Capacity-constrained assignment of rows of ``cost`` (N, K) within ``groups`` (N,).

    ``groups`` are dense ids 0..G-1, ``capacity`` (G,) the per-code capacity of each group.
    Groups whose expanded problem is small are solved exactly (LAP); larger ones by the
    auction (``auction_epsilon`` is relative to the cost spread; ``warm_prices`` (G, K) start
    the auction from earlier prices). ``with_prices=False`` skips the dual prices of the LAP
    groups (they are zeros then) — use it inside training loops where only codes are needed.
    """
    groups = np.asarray(groups, dtype=np.int64)
    num, num_codes = cost.shape
    num_groups = int(capacity.shape[0])
    sizes = np.bincount(groups, minlength=num_groups)
    if (capacity * num_codes < sizes).any():
        raise ValueError("a group has more members than its capacity allows")
    codes = np.empty(num, dtype=np.int64)
    prices = np.zeros((num_groups, num_codes), dtype=np.float64)

    order = np.argsort(groups, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    big = sizes * capacity * num_codes > lap_max_entries
    solvers: set[str] = set()
    rounds = 0
    # Singleton groups with capacity >= 1 simply take their cheapest code (the common case at
    # deep levels); their prices stay zero.
    single = sizes == 1
    if single.any():
        rows = order[starts[:-1][single]]
        codes[rows] = cost[rows].argmin(1)
    for group in np.nonzero((sizes > 1) & ~big)[0]:
        members = order[starts[group] : starts[group + 1]]
        codes[members] = _lap_group(cost[members], int(capacity[group]))
        if with_prices:
            prices[group] = _lap_prices(cost[members], codes[members], int(capacity[group]))
        solvers.add("lap")
    big_groups = np.nonzero(big)[0]
    if len(big_groups):
        members = np.concatenate([order[starts[g] : starts[g + 1]] for g in big_groups])
        local = np.searchsorted(big_groups, groups[members])
        warm = warm_prices[big_groups] if warm_prices is not None else None
        sub_codes, sub_prices, rounds = auction(
            cost[members], local, capacity[big_groups], epsilon=auction_epsilon, prices=warm
        )
        codes[members] = sub_codes
        prices[big_groups] = sub_prices
        solvers.add("auction")
    return BalancedAssignment(codes=codes, prices=prices, solver="+".join(sorted(solvers)) or "none", rounds=rounds)


def _lap_group(cost: np.ndarray, capacity: int) -> np.ndarray:
    """Exact capacity-constrained assignment of one group: (n, K) -> (n,) codes."""
    from scipy.optimize import linear_sum_assignment

    expanded = np.repeat(cost, capacity, axis=1) if capacity > 1 else cost  # column k*cap+c = copy c of code k
    rows, columns = linear_sum_assignment(expanded)
    out = np.empty(cost.shape[0], dtype=np.int64)
    out[rows] = columns // capacity
    return out


def _lap_prices(cost: np.ndarray, codes: np.ndarray, capacity: int, max_iterations: int | None = None) -> np.ndarray:
    """Prices (K,) under which every member's code is its strict cheapest: rule (*).

    For an optimal assignment the constraints ``p[a_i] - p[j] <= C[i, j] - C[i, a_i]`` (i
    would not rather move to j) are difference constraints with no negative cycle; codes
    with room left are fixed at price 0. Their largest solution is the shortest-path
    distance from the codes with room (Bellman-Ford, vectorised over members). Each vector
    is then indifferent between its code and its shortest-path predecessor; lowering every
    price by ``tau * depth`` in the shortest-path tree makes each tree edge strict by ``tau``
    while non-tree constraints keep their slack unless it was below ``tau`` times a depth
    difference (then rule (*) may swap two near-tied vectors, which the caller measures).
    """
    num, num_codes = cost.shape
    members = np.arange(num)
    counts = np.bincount(codes, minlength=num_codes)
    full = counts >= capacity
    # Codes with room are the sources (price 0). When every code is full (n = cap * K) the
    # prices are only defined up to a constant: start every code at 0 (a virtual source)
    # and shift the result so that the cheapest code costs 0.
    anchored = bool((~full).any())
    distance = np.where(full, np.inf, 0.0) if anchored else np.zeros(num_codes)
    initial = distance.copy()
    own = cost[members, codes]
    weight = cost - own[:, None]  # (n, K): w(j -> a_i) = C[i, j] - C[i, a_i]
    weight[members, codes] = np.inf
    # A code's price is bounded by every member it holds; with capacity > 1 the binding
    # member is the one with the smallest alternative, which the min over members handles.
    limit = max_iterations or (num + 2)
    for _ in range(limit):
        candidate = (distance[None, :] + weight).min(1)  # (n,)
        best = np.full(num_codes, np.inf)
        np.minimum.at(best, codes, candidate)
        updated = np.where(full, np.minimum(distance, best), distance)
        if np.array_equal(updated, distance):
            break
        distance = updated
    relaxed = distance < initial  # codes whose price some member's alternative sets
    distance = np.where(np.isfinite(distance), distance, 0.0)
    if not anchored:
        distance = distance - distance.min()
    # The shortest-path tree: each full code's predecessor is the code its binding member
    # (the one whose alternative sets the price) is indifferent to.
    through = distance[None, :] + weight  # (n, K)
    member_pred = through.argmin(1)
    member_value = through[members, member_pred]
    binding = np.full(num_codes, -1, dtype=np.int64)
    by_value = np.lexsort((member_value, codes))  # per code, its members by value, ascending
    first_of_code = np.concatenate([[True], codes[by_value][1:] != codes[by_value][:-1]])
    binding[codes[by_value][first_of_code]] = by_value[first_of_code]
    predecessor = np.where(full & relaxed & (binding >= 0), member_pred[np.maximum(binding, 0)], -1)
    depth = np.zeros(num_codes, dtype=np.int64)
    for _ in range(num_codes + 1):  # a tree: at most K relaxations
        new_depth = np.where(predecessor >= 0, depth[np.maximum(predecessor, 0)] + 1, 0)
        new_depth = np.minimum(new_depth, num_codes)  # guards against a (degenerate) cycle
        if np.array_equal(new_depth, depth):
            break
        depth = new_depth
    finite = weight[np.isfinite(weight)]
    scale = float(np.abs(finite).mean()) if finite.size else 1.0
    tau = 1e-9 * max(scale, 1e-12)
    return distance - tau * depth


def auction(
    cost: np.ndarray,
    groups: np.ndarray,
    capacity: np.ndarray,
    *,
    epsilon: float = 1e-3,
    prices: np.ndarray | None = None,
    scaling: float = 5.0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Jacobi auction with capacities (Bertsekas), epsilon-scaling, vectorised over groups.

    Each unassigned vector bids for its best code (net value ``-C - p``) raising that code's
    price by (best - second best + eps); a code keeps its ``cap`` highest bidders and evicts
    the rest; a full code's price is its lowest kept bid, a code with room has price 0 (or
    its warm-start price). ``epsilon`` is relative to the spread of ``cost``. Returns
    ``(codes (N,), prices (G, K), rounds)``; the result is eps-optimal.
    """
    cost = np.asarray(cost, dtype=np.float64)
    num, num_codes = cost.shape
    num_groups = int(capacity.shape[0])
    spread = float(cost.max() - cost.min()) or 1.0
    eps_final = epsilon * spread
    price = np.zeros((num_groups, num_codes)) if prices is None else np.array(prices, dtype=np.float64)
    flat_price = price.reshape(-1)  # a view: updates go to ``price``
    eps = eps_final if prices is not None else max(eps_final, spread / 10.0)
    rounds = 0
    rows = np.arange(num)
    # touched_mask[key] marks codes bid on this round; its last slot (index -1) stays False
    touched_mask = np.zeros(num_groups * num_codes + 1, dtype=bool)
    while True:
        owner = np.full(num, -1, dtype=np.int64)  # flat (group, code) key held by each vector
        held = np.zeros(num)
        unassigned = rows
        while len(unassigned):
            rounds += 1
            net = -cost[unassigned] - price[groups[unassigned]]  # (u, K)
            local = np.arange(len(unassigned))
            first = net.argmax(1)
            best = net[local, first]
            net[local, first] = -np.inf
            second = net.max(1) if num_codes > 1 else best
            keys = groups[unassigned] * num_codes + first
            bids = flat_price[keys] + (best - second) + eps
            touched_mask[keys] = True
            holders = np.nonzero(touched_mask[owner])[0]  # owner -1 reads the sentinel slot
            touched_mask[keys] = False
            cand_vec = np.concatenate([holders, unassigned])
            cand_key = np.concatenate([owner[holders], keys])
            cand_bid = np.concatenate([held[holders], bids])
            sort = np.lexsort((-cand_bid, cand_key))
            cand_vec, cand_key, cand_bid = cand_vec[sort], cand_key[sort], cand_bid[sort]
            start = np.concatenate([[0], np.nonzero(np.diff(cand_key))[0] + 1])
            length = np.diff(np.concatenate([start, [len(cand_key)]]))
            rank = np.arange(len(cand_key)) - np.repeat(start, length)
            cap = capacity[cand_key // num_codes]
            keep = rank < cap
            owner[cand_vec[~keep]] = -1
            owner[cand_vec[keep]] = cand_key[keep]
            held[cand_vec[keep]] = cand_bid[keep]
            segment_cap = capacity[cand_key[start] // num_codes]
            kept = np.minimum(length, segment_cap)
            now_full = kept == segment_cap
            lowest = cand_bid[start + kept - 1]
            flat_price[cand_key[start][now_full]] = lowest[now_full]
            unassigned = np.nonzero(owner < 0)[0]
        if eps <= eps_final:
            break
        eps = max(eps_final, eps / scaling)
    return owner % num_codes, price, rounds


def sinkhorn_codes(cost: np.ndarray, epsilon: float = 0.003, iterations: int = 50) -> np.ndarray:
    """Sinkhorn-Knopp uniform mapping: codes of the entropic OT plan with uniform marginals.

    ``cost`` (N, K) is scaled into [-1, 1] around its mean (as LC-Rec's indexer does) so that
    ``epsilon`` means the same at every scale; the plan ``diag(u) exp(-C'/eps) diag(v)`` has
    rows summing to 1/N and columns to 1/K; each row takes its largest entry. When
    ``exp(1/eps)`` fits in float64 the scaling vectors are iterated directly (two mat-vecs per
    iteration), otherwise in the log domain.
    """
    cost = np.asarray(cost, dtype=np.float64)
    num, num_codes = cost.shape
    spread = cost.max() - cost.min()
    scaled = (cost - cost.mean()) / (spread if spread > 0 else 1.0)
    if 1.0 / epsilon < 700.0:
        kernel = np.exp(-scaled / epsilon)
        u = np.ones(num)
        v = np.ones(num_codes)
        for _ in range(iterations):
            u = (1.0 / num) / (kernel @ v)
            v = (1.0 / num_codes) / (kernel.T @ u)
        return (kernel * u[:, None] * v[None, :]).argmax(1)
    log_kernel = -scaled / epsilon  # (N, K)
    log_u = np.zeros(num)
    log_v = np.zeros(num_codes)
    for _ in range(iterations):
        log_u = -math.log(num) - _logsumexp(log_kernel + log_v[None, :], axis=1)
        log_v = -math.log(num_codes) - _logsumexp(log_kernel + log_u[:, None], axis=0)
    return (log_kernel + log_u[:, None] + log_v[None, :]).argmax(1)


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    peak = values.max(axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return (np.log(np.exp(values - peak).sum(axis=axis, keepdims=True)) + peak).squeeze(axis)
