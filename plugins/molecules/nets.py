"""The graph-transformer denoiser and Graph DiT's condition encoder.

:class:`GraphTransformer` follows DiGress's denoiser (Vignac et al. 2023, §4.3 and App. B):
node, edge and graph-level streams; each head's attention score between two atoms is modulated
by the features of the pair (FiLM) and the scores, with both atoms' features, become the pair's
update, so bonds and atoms are refined together. (DiGress modulates every channel of the
query-key product; modulating one score per head keeps the pair stream affordable on a CPU.) As in Graph DiT (Liu et al. 2024, §3.2) the graph-level stream carries the
diffusion time and the property condition, and enters every block through adaptive layer norm
(shift, scale and a zero-initialised gate, as in DiT).

:class:`ConditionEncoder` embeds several properties at once: each numerical property by a soft
assignment to learnable cluster centres (Graph DiT's clustering-based encoding), each
categorical one by an embedding table, and every property has a learned "absent" embedding,
used for missing values, for the dropped conditions of classifier-free guidance and for the
properties a user does not ask for. Conditions are a ``(B, P)`` float tensor with NaN where a
property is absent, so dropping a condition is ``values.masked_fill(mask, nan)``.

The network's input and output sizes come from the training data (atom vocabulary, conditions),
which is known only once the data module is set up; :meth:`GraphTransformer.build` creates those
layers then, and the trunk's sizes are the constructor's arguments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from polydiff_molecules.features import EDGE_FEATURES, GRAPH_FEATURES, NODE_FEATURES

__all__ = ["GraphTransformer", "ConditionEncoder", "timestep_embedding"]

NUM_BOND_TYPES = 4


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of times in [0, 1] (scaled by 1000, as for discrete-time models).

    Shapes:
        t: (B,); returns (B, dim).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class ConditionEncoder(nn.Module):
    """Embed numerical and categorical properties, any of them possibly absent (NaN).

    Args:
        kinds: per property, ``0`` for numerical or the number of categories.
        dim: embedding size.
        clusters: cluster centres per numerical property.

    Shapes:
        values: (B, P) float (standardised numbers, category indices as floats, NaN = absent);
        returns (B, dim).
    """

    def __init__(self, kinds: Sequence[int], dim: int, clusters: int = 16):
        super().__init__()
        self.kinds = [int(k) for k in kinds]
        self.numeric = [i for i, k in enumerate(self.kinds) if k == 0]
        self.categorical = [i for i, k in enumerate(self.kinds) if k > 0]
        p = len(self.kinds)
        self.centres = nn.Parameter(torch.linspace(-2.5, 2.5, clusters).repeat(len(self.numeric), 1))
        self.log_width = nn.Parameter(torch.zeros(len(self.numeric)))
        self.numeric_proj = nn.ModuleList(nn.Linear(clusters, dim) for _ in self.numeric)
        self.tables = nn.ModuleList(nn.Embedding(self.kinds[i], dim) for i in self.categorical)
        self.absent = nn.Parameter(torch.zeros(p, dim))
        nn.init.normal_(self.absent, std=0.02)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, values: Tensor) -> Tensor:
        batch = values.shape[0]
        total = torch.zeros(batch, self.absent.shape[1], device=values.device)
        if not self.kinds:
            return total
        present = torch.isfinite(values)
        for j, i in enumerate(self.numeric):
            v = torch.where(present[:, i], values[:, i], torch.zeros_like(values[:, i]))
            dist = (v[:, None] - self.centres[j][None]) ** 2 / self.log_width[j].exp() ** 2
            emb = self.numeric_proj[j](torch.softmax(-dist, dim=-1))
            total = total + torch.where(present[:, i, None], emb, self.absent[i].expand_as(emb))
        for j, i in enumerate(self.categorical):
            index = torch.where(present[:, i], values[:, i], torch.zeros_like(values[:, i])).long()
            index = index.clamp(0, self.kinds[i] - 1)
            emb = self.tables[j](index)
            total = total + torch.where(present[:, i, None], emb, self.absent[i].expand_as(emb))
        return self.out(total)


class _Modulation(nn.Module):
    """adaLN: shift, scale and gate of one sub-layer from the graph-level vector, zero-initialised."""

    def __init__(self, cond_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 3 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, c: Tensor, extra_dims: int) -> tuple[Tensor, Tensor, Tensor]:
        shift, scale, gate = self.proj(c).chunk(3, dim=-1)
        shape = (c.shape[0],) + (1,) * extra_dims + (shift.shape[-1],)
        return shift.reshape(shape), scale.reshape(shape), gate.reshape(shape)


class _Block(nn.Module):
    """One graph-transformer block: edge-modulated attention, then feed-forward layers."""

    def __init__(self, dx: int, de: int, dy: int, heads: int, ff: int, dropout: float, update_graph: bool = True):
        super().__init__()
        if dx % heads:
            raise ValueError(f"node width {dx} is not divisible by the {heads} heads")
        self.heads, self.head_dim = heads, dx // heads
        self.norm_x, self.norm_e = nn.LayerNorm(dx, elementwise_affine=False), nn.LayerNorm(de, elementwise_affine=False)
        self.mod_x, self.mod_e = _Modulation(dy, dx), _Modulation(dy, de)
        self.qkv = nn.Linear(dx, 3 * dx)
        self.pair_mod = nn.Linear(de, 2 * heads)  # FiLM of each head's score by the pair's features
        self.e_from_scores = nn.Linear(heads, de)
        self.e_from_nodes = nn.Linear(dx, 2 * de)
        self.x_out = nn.Linear(dx, dx)
        self.ff_norm_x, self.ff_norm_e = nn.LayerNorm(dx, elementwise_affine=False), nn.LayerNorm(de, elementwise_affine=False)
        self.ff_mod_x, self.ff_mod_e = _Modulation(dy, dx), _Modulation(dy, de)
        self.ff_x = nn.Sequential(nn.Linear(dx, ff * dx), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff * dx, dx))
        self.ff_e = nn.Sequential(nn.Linear(de, ff * de), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff * de, de))
        # the last block's graph-level vector is not read again, so it has no update (every
        # parameter gets a gradient, as distributed training requires)
        self.y_update = nn.Sequential(nn.Linear(dy + dx + de, dy), nn.SiLU(), nn.Linear(dy, dy)) if update_graph else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, e: Tensor, y: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        pair = node_mask[:, :, None] & node_mask[:, None, :]
        shift, scale, gate = self.mod_x(y, 1)
        h = self.norm_x(x) * (1 + scale) + shift
        shift_e, scale_e, gate_e = self.mod_e(y, 2)
        he = self.norm_e(e) * (1 + scale_e) + shift_e
        q, k, v = (z.reshape(b, n, self.heads, self.head_dim) for z in self.qkv(h).chunk(3, dim=-1))
        scores = torch.einsum("bihd,bjhd->bijh", q, k) / math.sqrt(self.head_dim)  # (B, N, N, H)
        mul, add = self.pair_mod(he).chunk(2, dim=-1)
        scores = scores * (1 + mul) + add
        from_i, from_j = self.e_from_nodes(h).chunk(2, dim=-1)
        new_e = self.e_from_scores(scores) + from_i[:, :, None] + from_j[:, None, :]
        logits = scores.masked_fill(~node_mask[:, None, :, None], -1e4)
        attn = torch.softmax(logits, dim=2)
        out = torch.einsum("bijh,bjhd->bihd", attn, v).reshape(b, n, -1)
        x = x + gate * self.dropout(self.x_out(out))
        e = e + gate_e * self.dropout(new_e)

        shift, scale, gate = self.ff_mod_x(y, 1)
        x = x + gate * self.ff_x(self.ff_norm_x(x) * (1 + scale) + shift)
        shift_e, scale_e, gate_e = self.ff_mod_e(y, 2)
        e = e + gate_e * self.ff_e(self.ff_norm_e(e) * (1 + scale_e) + shift_e)
        x = x * node_mask[:, :, None]
        e = e * pair[..., None]

        if self.y_update is None:
            return x, e, y
        count = node_mask.sum(-1, keepdim=True).clamp_min(1)
        x_mean = x.sum(1) / count
        e_mean = e.sum((1, 2)) / (count * count)
        y = y + self.y_update(torch.cat([y, x_mean, e_mean], dim=-1))
        return x, e, y


class GraphTransformer(nn.Module):
    """DiGress-style graph transformer with Graph DiT's conditioning; predicts clean classes.

    Called as ``net(atoms, bonds, t, node_mask, conditions, node_features, graph_features,
    edge_features)`` and returning ``(atom_logits (B, N, K), bond_logits (B, N, N, 4))``; the
    bond logits are symmetric. :class:`polydiff_molecules.module.GraphDiffusion` wraps it into
    the core's ``denoiser(x_t, t, cond)`` contract.

    Args:
        hidden_nodes: width of the node stream.
        hidden_edges: width of the pair stream.
        hidden_graph: width of the graph-level (time and condition) stream.
        layers: number of blocks.
        heads: attention heads.
        ff: feed-forward expansion factor.
        dropout: dropout inside the blocks.
        clusters: cluster centres per numerical property in the condition encoder.
    """

    prediction = "x0"

    def __init__(self, hidden_nodes: int = 128, hidden_edges: int = 32, hidden_graph: int = 128, layers: int = 6,
                 heads: int = 8, ff: int = 2, dropout: float = 0.0, clusters: int = 16):
        super().__init__()
        if min(hidden_nodes, hidden_edges, hidden_graph, layers, heads, ff) < 1:
            raise ValueError("all widths, layers, heads and ff must be positive")
        self.dx, self.de, self.dy = int(hidden_nodes), int(hidden_edges), int(hidden_graph)
        self.clusters = int(clusters)
        self.blocks = nn.ModuleList(
            _Block(self.dx, self.de, self.dy, heads, ff, dropout, update_graph=i < layers - 1) for i in range(layers)
        )
        self.time_mlp = nn.Sequential(nn.Linear(self.dy, self.dy), nn.SiLU(), nn.Linear(self.dy, self.dy))
        self.graph_in = nn.Linear(GRAPH_FEATURES, self.dy)
        self.num_atom_types: int | None = None
        self.condition_kinds: list[int] | None = None

    @property
    def built(self) -> bool:
        return self.num_atom_types is not None

    def build(self, num_atom_types: int, condition_kinds: Sequence[int]) -> GraphTransformer:
        """Create the data-dependent layers: atom vocabulary size and the kinds of the conditions
        (0 numerical, else the number of categories). Calling it again with the same sizes does
        nothing; other sizes are an error."""
        kinds = [int(k) for k in condition_kinds]
        if self.built:
            if (self.num_atom_types, self.condition_kinds) != (int(num_atom_types), kinds):
                raise ValueError(
                    f"the network was built for {self.num_atom_types} atom types and conditions {self.condition_kinds}, "
                    f"not {num_atom_types} and {kinds}"
                )
            return self
        if num_atom_types < 1:
            raise ValueError(f"num_atom_types must be positive, got {num_atom_types}")
        self.num_atom_types, self.condition_kinds = int(num_atom_types), kinds
        self.node_in = nn.Sequential(nn.Linear(num_atom_types + NODE_FEATURES, self.dx), nn.SiLU(), nn.Linear(self.dx, self.dx))
        self.edge_in = nn.Sequential(nn.Linear(NUM_BOND_TYPES + EDGE_FEATURES, self.de), nn.SiLU(), nn.Linear(self.de, self.de))
        self.conditions = ConditionEncoder(kinds, self.dy, self.clusters)
        self.node_out = nn.Sequential(nn.LayerNorm(self.dx), nn.Linear(self.dx, self.dx), nn.SiLU(), nn.Linear(self.dx, num_atom_types))
        self.edge_out = nn.Sequential(nn.LayerNorm(self.de), nn.Linear(self.de, self.de), nn.SiLU(), nn.Linear(self.de, NUM_BOND_TYPES))
        return self

    def forward(self, atoms: Tensor, bonds: Tensor, t: Tensor, node_mask: Tensor, conditions: Tensor | None,
                node_features: Tensor, graph_features: Tensor, edge_features: Tensor) -> tuple[Tensor, Tensor]:
        if not self.built:
            raise RuntimeError("GraphTransformer.build(num_atom_types, condition_kinds) must be called before use")
        b, n = atoms.shape
        x_onehot = nn.functional.one_hot(atoms, self.num_atom_types).float()
        e_onehot = nn.functional.one_hot(bonds, NUM_BOND_TYPES).float()
        x = self.node_in(torch.cat([x_onehot, node_features], dim=-1))
        e = self.edge_in(torch.cat([e_onehot, edge_features], dim=-1))
        e = (e + e.transpose(1, 2)) / 2
        y = self.time_mlp(timestep_embedding(t, self.dy)) + self.graph_in(graph_features)
        if self.condition_kinds:
            if conditions is None:
                conditions = torch.full((b, len(self.condition_kinds)), float("nan"), device=atoms.device)
            y = y + self.conditions(conditions)
        for block in self.blocks:
            x, e, y = block(x, e, y, node_mask)
        atom_logits = self.node_out(x) + x_onehot  # DiGress keeps the input classes as a residual
        bond_logits = self.edge_out(e)
        bond_logits = (bond_logits + bond_logits.transpose(1, 2)) / 2 + e_onehot
        return atom_logits, bond_logits
