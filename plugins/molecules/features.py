"""Structural and chemical features of (noisy) dense molecular graphs, in plain PyTorch.

A graph transformer sees only pairwise interactions, which cannot count cycles or tell whether
a graph is connected; DiGress (Vignac et al. 2023, §4.3) therefore feeds the denoiser features
recomputed from the noisy graph at every step. Computed here, batched and without graph-tool or
compiled ORCA:

- **cycles**: closed walks give the number of 3- and 4-cycles through each node exactly
  (``diag(A³)/2`` and ``(diag(A⁴) - d(d-1) - (A d))/2``) and per graph;
- **random-walk return probabilities** ``diag(P^k)``, ``k = 1..K`` (Dwivedi et al. 2022), which
  carry the 5- and 6-ring information molecules are made of;
- **connectivity**: the size of each node's connected component, whether it is in the largest
  one and the number of components (by repeated squaring of the reachability matrix);
- **spectrum**: the smallest eigenvalues of the graph Laplacian;
- **chemistry**: each atom's current valence (sum of bond orders) and its room left under the
  largest valence its type allows, and the molecular weight (DiGress's molecular features).

Shapes: ``atoms (B, N)`` long, ``bonds (B, N, N)`` long (0 = no bond), ``node_mask (B, N)`` bool.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["adjacency", "cycle_counts", "random_walk_returns", "components", "laplacian_spectrum",
           "graph_features", "NODE_FEATURES", "GRAPH_FEATURES", "EDGE_FEATURES"]

RW_STEPS = 8
EIGENVALUES = 5
#: Number of features :func:`graph_features` returns per node, per graph and per atom pair.
NODE_FEATURES = 2 + RW_STEPS + 2 + 3
GRAPH_FEATURES = 2 + 1 + EIGENVALUES + 2
EDGE_FEATURES = 2

#: Bond order of each bond class (none, single, double, triple).
BOND_ORDERS = (0.0, 1.0, 2.0, 3.0)


def adjacency(bonds: Tensor, node_mask: Tensor) -> Tensor:
    """0/1 float adjacency without self-loops, zero on padding. Shapes: returns (B, N, N)."""
    pair = node_mask[:, :, None] & node_mask[:, None, :]
    eye = torch.eye(bonds.shape[-1], dtype=torch.bool, device=bonds.device)
    return ((bonds > 0) & pair & ~eye).float()


def cycle_counts(adj: Tensor) -> tuple[Tensor, Tensor]:
    """Numbers of 3- and 4-cycles through each node and in each graph.

    Returns:
        node ``(B, N, 2)`` and graph ``(B, 2)`` counts.
    """
    a2 = adj @ adj
    a3 = a2 @ adj
    a4 = a3 @ adj
    deg = adj.sum(-1)
    c3 = torch.diagonal(a3, dim1=-2, dim2=-1) / 2
    walks4 = torch.diagonal(a4, dim1=-2, dim2=-1)
    c4 = (walks4 - deg * (deg - 1) - (adj @ deg.unsqueeze(-1)).squeeze(-1)) / 2
    node = torch.stack([c3, c4], dim=-1)
    graph = torch.stack([c3.sum(-1) / 3, c4.sum(-1) / 4], dim=-1)
    return node, graph


def random_walk_returns(adj: Tensor, steps: int = RW_STEPS) -> Tensor:
    """Probability that a random walk from each node is back after 1..steps steps; 0 for isolated nodes.

    Shapes:
        returns (B, N, steps).
    """
    deg = adj.sum(-1, keepdim=True)
    walk = adj / deg.clamp_min(1)
    power = walk
    out = []
    for _ in range(steps):
        out.append(torch.diagonal(power, dim1=-2, dim2=-1))
        power = power @ walk
    return torch.stack(out, dim=-1)


def components(adj: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Connected components by repeated squaring of the reachability matrix.

    Returns:
        ``(size, in_largest, count)``: each real node's component size ``(B, N)`` (0 on padding),
        whether it lies in a largest component ``(B, N)`` bool, and the number of components ``(B,)``.
    """
    n = adj.shape[-1]
    eye = torch.eye(n, dtype=adj.dtype, device=adj.device)
    reach = ((adj + eye * node_mask[:, :, None]) > 0).to(adj.dtype)
    for _ in range(max(1, math.ceil(math.log2(max(n, 2))))):
        reach = ((reach @ reach) > 0).to(adj.dtype)
    size = reach.sum(-1) * node_mask
    largest = size.amax(-1, keepdim=True)
    in_largest = (size == largest) & node_mask
    count = torch.where(node_mask, 1.0 / size.clamp_min(1), torch.zeros_like(size)).sum(-1)
    return size, in_largest, count


def laplacian_spectrum(adj: Tensor, node_mask: Tensor, k: int = EIGENVALUES) -> Tensor:
    """The ``k`` smallest eigenvalues of the combinatorial Laplacian of the real nodes, divided by
    the number of real nodes (so a graph's features do not depend on the padding of its batch).

    Padding nodes get a large diagonal so that their eigenvalues sort last; missing values
    (graphs with fewer than ``k`` nodes) are 0.

    Shapes:
        returns (B, k).
    """
    n = adj.shape[-1]
    lap = torch.diag_embed(adj.sum(-1)) - adj
    big = 4.0 * n
    lap = lap + torch.diag_embed((~node_mask).to(adj.dtype) * big)
    values = torch.linalg.eigvalsh(lap.double()).to(adj.dtype)
    values = torch.where(values >= big - 1e-3, torch.zeros_like(values), values)
    if values.shape[-1] < k:
        values = torch.nn.functional.pad(values, (0, k - values.shape[-1]))
    return values[..., :k] / node_mask.sum(-1, keepdim=True).clamp_min(1).to(values.dtype)


@torch.no_grad()
def graph_features(
    atoms: Tensor, bonds: Tensor, node_mask: Tensor, max_valence: Tensor, atom_weight: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """All features of a batch of graphs, scaled to order one.

    Args:
        atoms: atom classes.
        bonds: bond classes (0 none, 1 single, 2 double, 3 triple), symmetric.
        node_mask: real atoms.
        max_valence: largest valence of each atom class ``(K,)``.
        atom_weight: mass of each atom class ``(K,)`` (with its implicit hydrogens not counted).

    Returns:
        ``(node (B, N, NODE_FEATURES), graph (B, GRAPH_FEATURES), edge (B, N, N, EDGE_FEATURES))``.
    """
    adj = adjacency(bonds, node_mask)
    mask = node_mask.to(adj.dtype)
    n_real = mask.sum(-1).clamp_min(1)
    node_cycles, graph_cycles = cycle_counts(adj)
    rw = random_walk_returns(adj)
    size, in_largest, count = components(adj, node_mask)
    spectrum = laplacian_spectrum(adj, node_mask)

    orders = torch.tensor(BOND_ORDERS, dtype=adj.dtype, device=adj.device)[bonds] * adj
    valence = orders.sum(-1)
    room = (max_valence.to(adj.dtype)[atoms] - valence) * mask
    weight = (atom_weight.to(adj.dtype)[atoms] * mask).sum(-1)

    # counts are squashed: noisy graphs early in sampling can be far denser than molecules
    node = torch.cat([
        torch.log1p(node_cycles.clamp_min(0)),
        rw,
        (size / n_real[:, None]).unsqueeze(-1),
        in_largest.to(adj.dtype).unsqueeze(-1),
        (valence.clamp(max=12) / 4).unsqueeze(-1),
        (room.clamp(-8, 8) / 4).unsqueeze(-1),
        (room < 0).to(adj.dtype).unsqueeze(-1),
    ], dim=-1) * mask[:, :, None]
    graph = torch.cat([
        torch.log1p(graph_cycles.clamp_min(0)),
        ((count - 1) / 4).unsqueeze(-1),
        spectrum,
        (n_real / 30).unsqueeze(-1),
        (weight / 300).unsqueeze(-1),
    ], dim=-1)
    a2 = adj @ adj
    pair = mask[:, :, None] * mask[:, None, :]
    edge = torch.stack([(a2 > 0).to(adj.dtype), torch.log1p(a2)], dim=-1) * pair[..., None]
    return node, graph, edge
