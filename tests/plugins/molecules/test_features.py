"""Structural and chemical graph features: exact counts on graphs built by hand.

Cycle counts are checked on rings a chemist can count (triangle, square, the Kekulé benzene
ring, K4, bicyclobutane, bicyclo[2.2.0]hexane, two fragments at once) and against a brute-force
count on random graphs; random-walk returns, components and the Laplacian spectrum have closed
forms on small graphs; padding must not change anything a real atom or pair sees.
"""

from __future__ import annotations

import itertools
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("rdkit")

from polydiff_molecules.features import (  # noqa: E402
    EDGE_FEATURES,
    GRAPH_FEATURES,
    NODE_FEATURES,
    RW_STEPS,
    adjacency,
    components,
    cycle_counts,
    graph_features,
    laplacian_spectrum,
    random_walk_returns,
)
from polydiff_molecules.module import atom_type_table  # noqa: E402

TOKENS = ["C", "N", "O", "N+"]
C, N, O, NP = range(4)
# node feature columns: log1p(c3), log1p(c4), rw_1..rw_8, size/n, in_largest, valence/4, room/4, room<0
VALENCE, ROOM, OVER = 2 + RW_STEPS + 2, 2 + RW_STEPS + 3, 2 + RW_STEPS + 4
# graph feature columns: log1p(c3), log1p(c4), (count-1)/4, 5 eigenvalues, n/30, weight/300
SPECTRUM = slice(3, 8)


def graph(n: int, edges, *, pad: int = 0, atoms=None, orders=None):
    """``(atoms (1, N), bonds (1, N, N), node_mask (1, N))`` of one graph with ``pad`` padding nodes."""
    total = n + pad
    bonds = torch.zeros(1, total, total, dtype=torch.long)
    for k, (i, j) in enumerate(edges):
        order = 1 if orders is None else orders[k]
        bonds[0, i, j] = bonds[0, j, i] = order
    a = torch.zeros(1, total, dtype=torch.long)
    if atoms is not None:
        a[0, :n] = torch.tensor(atoms)
    mask = torch.zeros(1, total, dtype=torch.bool)
    mask[0, :n] = True
    return a, bonds, mask


def adj_of(n: int, edges, pad: int = 0):
    _, bonds, mask = graph(n, edges, pad=pad)
    return adjacency(bonds, mask), mask


def ring(n: int) -> list[tuple[int, int]]:
    return [(i, (i + 1) % n) for i in range(n)]


def tables():
    return atom_type_table(TOKENS)


# --- adjacency ------------------------------------------------------------------------------------
def test_adjacency_is_binary_without_diagonal_or_padding():
    bonds = torch.tensor([[[2, 1, 3], [1, 0, 2], [3, 2, 1]]])  # orders, a self "bond", a bond to padding
    mask = torch.tensor([[True, True, False]])
    adj = adjacency(bonds, mask)
    assert torch.equal(adj, torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]))


# --- cycles ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, edges, node3, node4, graph34",
    [
        (3, ring(3), [1, 1, 1], [0, 0, 0], (1, 0)),  # triangle
        (4, ring(4), [0] * 4, [1] * 4, (0, 1)),  # square (cyclobutane)
        (6, ring(6), [0] * 6, [0] * 6, (0, 0)),  # benzene: one 6-ring, no 3- or 4-cycles
        (4, list(itertools.combinations(range(4), 2)), [3] * 4, [3] * 4, (4, 3)),  # K4 (tetrahedrane)
        (4, ring(4) + [(0, 2)], [2, 1, 2, 1], [1] * 4, (2, 1)),  # bicyclo[1.1.0]butane
        # bicyclo[2.2.0]hexane: two squares sharing the bond 0-1; the outer 6-ring is no 4-cycle
        (6, [(0, 1), (1, 2), (2, 3), (3, 0), (1, 4), (4, 5), (5, 0)], [0] * 6, [2, 2, 1, 1, 1, 1], (0, 2)),
        (5, [(0, 1), (1, 2), (2, 3), (3, 4)], [0] * 5, [0] * 5, (0, 0)),  # a chain (tree)
    ],
    ids=["triangle", "square", "benzene", "K4", "bicyclobutane", "bicyclohexane", "chain"],
)
def test_cycle_counts_by_hand(n, edges, node3, node4, graph34):
    adj, _ = adj_of(n, edges, pad=2)
    node, graph_counts = cycle_counts(adj)
    assert node.shape == (1, n + 2, 2) and graph_counts.shape == (1, 2)
    torch.testing.assert_close(node[0, :n, 0], torch.tensor(node3, dtype=torch.float32))
    torch.testing.assert_close(node[0, :n, 1], torch.tensor(node4, dtype=torch.float32))
    assert torch.equal(node[0, n:], torch.zeros(2, 2))  # padding is in no cycle
    torch.testing.assert_close(graph_counts[0], torch.tensor(graph34, dtype=torch.float32))


def test_benzene_kekule_orders_do_not_matter():
    atoms, bonds, mask = graph(6, ring(6), orders=[2, 1, 2, 1, 2, 1])
    node, counts = cycle_counts(adjacency(bonds, mask))
    assert torch.equal(counts, torch.zeros(1, 2)) and torch.equal(node, torch.zeros(1, 6, 2))


def test_cycles_of_two_fragments_and_a_batch():
    # a triangle and a square in one graph (7 atoms), batched with a lone square padded to 7
    tri_square = ring(3) + [(3 + i, 3 + j) for i, j in ring(4)]
    a1, _ = adj_of(7, tri_square)
    a2, _ = adj_of(4, ring(4), pad=3)
    node, counts = cycle_counts(torch.cat([a1, a2]))
    torch.testing.assert_close(counts, torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    torch.testing.assert_close(node[0, :, 0], torch.tensor([1.0, 1, 1, 0, 0, 0, 0]))
    torch.testing.assert_close(node[0, :, 1], torch.tensor([0.0, 0, 0, 1, 1, 1, 1]))
    torch.testing.assert_close(node[1, :, 1], torch.tensor([1.0, 1, 1, 1, 0, 0, 0]))


def _brute_force(n: int, edges: set[frozenset]) -> tuple[list[int], list[int], int, int]:
    node3, node4 = [0] * n, [0] * n
    tri = quad = 0
    for a, b, c in itertools.combinations(range(n), 3):
        if {frozenset((a, b)), frozenset((b, c)), frozenset((a, c))} <= edges:
            tri += 1
            for v in (a, b, c):
                node3[v] += 1
    for quad_nodes in itertools.combinations(range(n), 4):
        a = quad_nodes[0]
        for b, c, d in ((quad_nodes[1], quad_nodes[2], quad_nodes[3]), (quad_nodes[1], quad_nodes[3], quad_nodes[2]),
                        (quad_nodes[2], quad_nodes[1], quad_nodes[3])):  # the 3 distinct 4-cycles on 4 nodes
            if {frozenset((a, b)), frozenset((b, c)), frozenset((c, d)), frozenset((d, a))} <= edges:
                quad += 1
                for v in quad_nodes:
                    node4[v] += 1
    return node3, node4, tri, quad


def test_cycle_counts_match_brute_force_on_random_graphs():
    gen = torch.Generator().manual_seed(0)
    n = 8
    for density in (0.3, 0.5, 0.8):
        upper = torch.triu(torch.rand(n, n, generator=gen) < density, diagonal=1)
        edges = {frozenset((i, j)) for i, j in upper.nonzero().tolist()}
        adj, _ = adj_of(n, [tuple(e) for e in edges])
        node, counts = cycle_counts(adj)
        node3, node4, tri, quad = _brute_force(n, edges)
        assert node[0, :, 0].tolist() == node3 and node[0, :, 1].tolist() == node4
        assert counts[0].tolist() == [tri, quad]


# --- random walks ---------------------------------------------------------------------------------
def test_random_walk_returns_on_a_two_atom_path_alternate():
    adj, _ = adj_of(2, [(0, 1)], pad=1)
    rw = random_walk_returns(adj, steps=6)
    assert rw.shape == (1, 3, 6)
    expected = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])  # diag(P) = 0, diag(P^2) = 1, ...
    assert torch.equal(rw[0, 0], expected) and torch.equal(rw[0, 1], expected)
    assert torch.equal(rw[0, 2], torch.zeros(6))  # padding (and isolated atoms) never return


def test_random_walk_returns_on_a_triangle_follow_its_spectrum():
    adj, _ = adj_of(3, ring(3))
    rw = random_walk_returns(adj)
    # P = (J - I)/2 has eigenvalues 1, -1/2, -1/2: diag(P^k) = (1 + 2 (-1/2)^k) / 3
    expected = torch.tensor([(1 + 2 * (-0.5) ** k) / 3 for k in range(1, RW_STEPS + 1)])
    for i in range(3):
        torch.testing.assert_close(rw[0, i], expected)


def test_isolated_atom_has_zero_returns():
    adj, _ = adj_of(3, [(0, 1)])
    assert torch.equal(random_walk_returns(adj)[0, 2], torch.zeros(RW_STEPS))


# --- components -----------------------------------------------------------------------------------
def test_components_sizes_count_and_largest():
    # triangle (0-2), square (3-6), lone atom 7, two padding nodes
    edges = ring(3) + [(3 + i, 3 + j) for i, j in ring(4)]
    adj, mask = adj_of(8, edges, pad=2)
    size, in_largest, count = components(adj, mask)
    assert size[0].tolist() == [3, 3, 3, 4, 4, 4, 4, 1, 0, 0]
    assert in_largest[0].tolist() == [False] * 3 + [True] * 4 + [False] * 3
    torch.testing.assert_close(count, torch.tensor([3.0]))


def test_components_of_a_long_chain_need_all_squarings():
    n = 17  # a path of 16 bonds: reachability across it needs four squarings past the first
    adj, mask = adj_of(n, [(i, i + 1) for i in range(n - 1)])
    size, in_largest, count = components(adj, mask)
    assert size[0].tolist() == [n] * n and bool(in_largest.all())
    torch.testing.assert_close(count, torch.tensor([1.0]))


def test_components_ties_mark_every_largest():
    adj, mask = adj_of(4, [(0, 1), (2, 3)])
    size, in_largest, count = components(adj, mask)
    assert size[0].tolist() == [2] * 4 and bool(in_largest.all())
    torch.testing.assert_close(count, torch.tensor([2.0]))


# --- spectrum -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, edges, eigenvalues",
    [
        (3, ring(3), [0, 3, 3]),
        (4, ring(4), [0, 2, 2, 4]),
        (5, ring(3) + [(3, 4)], [0, 0, 2, 3, 3]),  # two components: two zero eigenvalues
        (2, [], [0, 0]),
    ],
    ids=["triangle", "square", "triangle+bond", "two-lone-atoms"],
)
def test_laplacian_spectrum_by_hand(n, edges, eigenvalues):
    adj, mask = adj_of(n, edges)
    expected = torch.tensor((eigenvalues + [0] * 5)[:5], dtype=torch.float32) / n
    torch.testing.assert_close(laplacian_spectrum(adj, mask), expected[None], atol=1e-6, rtol=0)


def test_laplacian_spectrum_does_not_depend_on_padding():
    adj, mask = adj_of(3, ring(3))
    padded_adj, padded_mask = adj_of(3, ring(3), pad=2)
    torch.testing.assert_close(laplacian_spectrum(padded_adj, padded_mask), laplacian_spectrum(adj, mask))


# --- all features ---------------------------------------------------------------------------------
def test_feature_shapes_match_the_declared_sizes():
    max_valence, weight = tables()
    atoms, bonds, mask = graph(4, ring(4), pad=1, atoms=[C, N, O, C])
    node, graph_f, edge = graph_features(atoms, bonds, mask, max_valence, weight)
    assert node.shape == (1, 5, NODE_FEATURES)
    assert graph_f.shape == (1, GRAPH_FEATURES)
    assert edge.shape == (1, 5, 5, EDGE_FEATURES)
    assert all(torch.isfinite(x).all() for x in (node, graph_f, edge))


def test_overbonded_oxygen_has_negative_room():
    max_valence, weight = tables()
    assert max_valence.tolist() == [4.0, 3.0, 2.0, 4.0]  # N+ has carbon's valence
    # C=O-C: the oxygen has valence 3 against its largest valence 2
    atoms, bonds, mask = graph(3, [(0, 1), (1, 2)], atoms=[C, O, C], orders=[2, 1])
    node, graph_f, _ = graph_features(atoms, bonds, mask, max_valence, weight)
    torch.testing.assert_close(node[0, :, VALENCE], torch.tensor([2.0, 3.0, 1.0]) / 4)
    torch.testing.assert_close(node[0, :, ROOM], torch.tensor([2.0, -1.0, 3.0]) / 4)
    assert node[0, :, OVER].tolist() == [0.0, 1.0, 0.0]
    torch.testing.assert_close(graph_f[0, -1], (2 * 12.011 + 15.999) / 300 * torch.ones(()), rtol=1e-5, atol=0)
    torch.testing.assert_close(graph_f[0, -2], torch.tensor(3 / 30))


def test_ammonium_with_four_bonds_has_no_room_left_but_is_not_over():
    max_valence, weight = tables()
    atoms, bonds, mask = graph(5, [(0, i) for i in range(1, 5)], atoms=[NP, C, C, C, C])
    node, _, _ = graph_features(atoms, bonds, mask, max_valence, weight)
    assert node[0, 0, VALENCE].item() == 1.0 and node[0, 0, ROOM].item() == 0.0 and node[0, 0, OVER].item() == 0.0
    torch.testing.assert_close(node[0, 1:, ROOM], torch.full((4,), 3 / 4))


def test_edge_features_on_a_path():
    max_valence, weight = tables()
    atoms, bonds, mask = graph(3, [(0, 1), (1, 2)])
    _, _, edge = graph_features(atoms, bonds, mask, max_valence, weight)
    a2 = torch.tensor([[1.0, 0, 1], [0, 2, 0], [1, 0, 1]])  # walks of length two
    torch.testing.assert_close(edge[0, :, :, 0], (a2 > 0).float())
    torch.testing.assert_close(edge[0, :, :, 1], torch.log1p(a2))


def test_graph_counts_and_components_in_the_graph_features():
    max_valence, weight = tables()
    edges = ring(3) + [(3 + i, 3 + j) for i, j in ring(4)]
    atoms, bonds, mask = graph(7, edges)
    node, graph_f, _ = graph_features(atoms, bonds, mask, max_valence, weight)
    torch.testing.assert_close(graph_f[0, :3], torch.tensor([math.log(2), math.log(2), 0.25]))
    torch.testing.assert_close(node[0, :, 0], torch.tensor([math.log(2)] * 3 + [0.0] * 4))
    torch.testing.assert_close(node[0, :, 1], torch.tensor([0.0] * 3 + [math.log(2)] * 4))
    torch.testing.assert_close(node[0, :, 2 + RW_STEPS], torch.tensor([3 / 7] * 3 + [4 / 7] * 4))
    assert node[0, :, 3 + RW_STEPS].tolist() == [0.0] * 3 + [1.0] * 4


def _random_molecule(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    upper = torch.triu(torch.randint(0, 4, (n, n), generator=gen) * (torch.rand(n, n, generator=gen) < 0.4), 1)
    bonds = upper + upper.T
    atoms = torch.randint(0, 4, (n,), generator=gen)
    return atoms, bonds


def test_padding_does_not_change_real_atoms_or_pairs():
    max_valence, weight = tables()
    n, pad = 7, 4
    atoms, bonds = _random_molecule(n, 0)
    mask = torch.ones(1, n, dtype=torch.bool)
    node, graph_f, edge = graph_features(atoms[None], bonds[None], mask, max_valence, weight)
    # padding with junk classes and junk bonds, which the mask must hide
    gen = torch.Generator().manual_seed(1)
    big_atoms = torch.randint(0, 4, (1, n + pad), generator=gen)
    big_atoms[0, :n] = atoms
    junk = torch.randint(0, 4, (n + pad, n + pad), generator=gen)
    big_bonds = torch.triu(junk, 1) + torch.triu(junk, 1).T
    big_bonds[:n, :n] = bonds
    big_mask = torch.zeros(1, n + pad, dtype=torch.bool)
    big_mask[0, :n] = True
    node_p, graph_p, edge_p = graph_features(big_atoms, big_bonds[None], big_mask, max_valence, weight)
    torch.testing.assert_close(node_p[0, :n], node[0])
    torch.testing.assert_close(edge_p[0, :n, :n], edge[0])
    assert torch.equal(node_p[0, n:], torch.zeros(pad, NODE_FEATURES))
    assert not edge_p[0, n:].any() and not edge_p[0, :, n:].any()
    keep = [i for i in range(GRAPH_FEATURES) if i not in range(SPECTRUM.start, SPECTRUM.stop)]
    torch.testing.assert_close(graph_p[0, keep], graph_f[0, keep])


def test_padding_does_not_change_graph_features():
    max_valence, weight = tables()
    atoms, bonds, mask = graph(4, ring(4), atoms=[C, C, O, N])
    padded = graph(4, ring(4), pad=3, atoms=[C, C, O, N])
    torch.testing.assert_close(graph_features(*padded, max_valence, weight)[1],
                               graph_features(atoms, bonds, mask, max_valence, weight)[1])


def test_features_are_permutation_equivariant():
    max_valence, weight = tables()
    n = 9
    atoms, bonds = _random_molecule(n, 3)
    mask = torch.ones(1, n, dtype=torch.bool)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(4))
    node, graph_f, edge = graph_features(atoms[None], bonds[None], mask, max_valence, weight)
    node_p, graph_p, edge_p = graph_features(atoms[perm][None], bonds[perm][:, perm][None], mask, max_valence, weight)
    torch.testing.assert_close(node_p[0], node[0, perm])
    torch.testing.assert_close(edge_p[0], edge[0][perm][:, perm])
    torch.testing.assert_close(graph_p, graph_f, atol=1e-5, rtol=1e-5)
