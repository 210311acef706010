"""The graph transformer and its condition encoder: symmetries, masking and conditioning.

Networks are tiny (16 node, 8 pair, 16 graph channels, two layers). The adaptive layer norms
are zero-initialised, so that a fresh network ignores the time and the conditions; tests that
need the blocks to act give those projections random weights first.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("rdkit")
from torch import nn  # noqa: E402

from polydiff_molecules.features import EDGE_FEATURES, GRAPH_FEATURES, NODE_FEATURES, graph_features  # noqa: E402
from polydiff_molecules.module import atom_type_table  # noqa: E402
from polydiff_molecules.nets import ConditionEncoder, GraphTransformer, timestep_embedding  # noqa: E402

TOKENS = ["C", "N", "O", "N+"]
KINDS = [0, 0, 3]  # two numerical properties and one with three categories


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_net(layers: int = 2, seed: int = 0, kinds=KINDS) -> GraphTransformer:
    torch.manual_seed(seed)
    net = GraphTransformer(hidden_nodes=16, hidden_edges=8, hidden_graph=16, layers=layers, heads=2)
    net.build(len(TOKENS), kinds)
    gen = _gen(seed + 100)
    with torch.no_grad():  # wake the zero-initialised adaLN projections
        for name, p in net.named_parameters():
            if ".mod_" in name or ".ff_mod_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return net.eval()


def random_graphs(batch: int, n: int, seed: int, sizes=None):
    gen = _gen(seed)
    atoms = torch.randint(0, len(TOKENS), (batch, n), generator=gen)
    present = torch.rand(batch, n, n, generator=gen) < 0.4
    upper = torch.triu(torch.randint(0, 4, (batch, n, n), generator=gen) * present, 1)
    bonds = upper + upper.transpose(1, 2)
    sizes = [n] * batch if sizes is None else sizes
    mask = torch.arange(n)[None] < torch.tensor(sizes)[:, None]
    pair = mask[:, :, None] & mask[:, None, :]
    return atoms * mask, bonds * pair, mask


def features(atoms, bonds, mask):
    max_valence, weight = atom_type_table(TOKENS)
    return graph_features(atoms, bonds, mask, max_valence, weight)


def run(net, atoms, bonds, mask, t=None, conditions=None, feats=None):
    t = torch.full((atoms.shape[0],), 0.4) if t is None else t
    feats = features(atoms, bonds, mask) if feats is None else feats
    with torch.no_grad():
        return net(atoms, bonds, t, mask, conditions, *feats)


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


# --- the time embedding ---------------------------------------------------------------------------
def test_timestep_embedding_values_and_odd_width():
    emb = timestep_embedding(torch.tensor([0.0, 0.5]), 7)
    assert emb.shape == (2, 7)
    assert emb[0, :3].tolist() == [1.0, 1.0, 1.0] and emb[0, 3:].tolist() == [0.0] * 4  # cos 0, sin 0, pad
    close(emb[1, 0], torch.tensor(math.cos(500.0)))  # first frequency is 1: 1000 t
    close(emb[1, 3], torch.tensor(math.sin(500.0)))
    assert emb[:, 6].tolist() == [0.0, 0.0]


# --- building -------------------------------------------------------------------------------------
def test_forward_before_build_is_an_error():
    net = GraphTransformer(hidden_nodes=16, hidden_edges=8, hidden_graph=16, layers=1, heads=2)
    assert not net.built
    atoms, bonds, mask = random_graphs(1, 3, 0)
    with pytest.raises(RuntimeError, match="build"):
        run(net, atoms, bonds, mask)


def test_build_again_with_the_same_sizes_is_a_no_op_and_other_sizes_raise():
    net = GraphTransformer(hidden_nodes=16, hidden_edges=8, hidden_graph=16, layers=1, heads=2)
    assert net.build(4, [0, 3]) is net
    params = [id(p) for p in net.parameters()]
    assert net.build(4, (0, 3)) is net
    assert [id(p) for p in net.parameters()] == params  # nothing rebuilt
    with pytest.raises(ValueError, match="built for 4 atom types"):
        net.build(5, [0, 3])
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        net.build(4, [0])
    assert net.num_atom_types == 4 and net.condition_kinds == [0, 3]


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        GraphTransformer(hidden_nodes=15, hidden_edges=8, hidden_graph=16, layers=1, heads=2)
    with pytest.raises(ValueError, match="positive"):
        GraphTransformer(hidden_nodes=16, hidden_edges=8, hidden_graph=16, layers=0, heads=2)
    with pytest.raises(ValueError, match="num_atom_types"):
        GraphTransformer(hidden_nodes=16, hidden_edges=8, hidden_graph=16, layers=1, heads=2).build(0, [])


# --- symmetries -----------------------------------------------------------------------------------
def test_output_shapes_and_symmetric_bond_logits():
    net = make_net()
    atoms, bonds, mask = random_graphs(3, 6, 1, sizes=[6, 4, 2])
    atom_logits, bond_logits = run(net, atoms, bonds, mask)
    assert atom_logits.shape == (3, 6, 4) and bond_logits.shape == (3, 6, 6, 4)
    assert torch.equal(bond_logits, bond_logits.transpose(1, 2))
    assert torch.isfinite(atom_logits).all() and torch.isfinite(bond_logits).all()


def test_atom_and_bond_logits_are_permutation_equivariant():
    net = make_net()
    n, real = 8, 6
    atoms, bonds, mask = random_graphs(1, n, 2, sizes=[real])
    perm = torch.cat([torch.randperm(real, generator=_gen(3)), torch.arange(real, n)])  # padding stays last
    cond = torch.tensor([[0.3, float("nan"), 2.0]])
    atom_logits, bond_logits = run(net, atoms, bonds, mask, conditions=cond)
    atom_p, bond_p = run(net, atoms[:, perm], bonds[:, perm][:, :, perm], mask, conditions=cond)
    close(atom_p[0, :real], atom_logits[0, perm[:real]])
    close(bond_p[0, :real, :real], bond_logits[0][perm[:real]][:, perm[:real]])


def test_padding_nodes_leave_the_real_outputs_unchanged():
    net = make_net()
    n, pad = 5, 3
    atoms, bonds, mask = random_graphs(1, n, 4)
    node, graph_f, edge = features(atoms, bonds, mask)
    atom_logits, bond_logits = run(net, atoms, bonds, mask, feats=(node, graph_f, edge))
    # junk classes and bonds on the padding; the graph-level features are the molecule's own
    gen = _gen(5)
    big_atoms = torch.randint(0, 4, (1, n + pad), generator=gen)
    big_atoms[:, :n] = atoms
    junk = torch.triu(torch.randint(0, 4, (n + pad, n + pad), generator=gen), 1)
    big_bonds = (junk + junk.T)[None]
    big_bonds[:, :n, :n] = bonds
    big_mask = torch.zeros(1, n + pad, dtype=torch.bool)
    big_mask[:, :n] = True
    big_node, _, big_edge = features(big_atoms, big_bonds, big_mask)
    atom_p, bond_p = run(net, big_atoms, big_bonds, big_mask, feats=(big_node, graph_f, big_edge))
    close(atom_p[:, :n], atom_logits)
    close(bond_p[:, :n, :n], bond_logits)


def test_graphs_of_a_batch_do_not_see_each_other():
    net = make_net()
    atoms, bonds, mask = random_graphs(2, 6, 6, sizes=[6, 4])
    cond = torch.tensor([[0.1, -1.0, 1.0], [float("nan"), 0.5, float("nan")]])
    t = torch.tensor([0.2, 0.9])
    feats = features(atoms, bonds, mask)
    atom_logits, bond_logits = run(net, atoms, bonds, mask, t=t, conditions=cond, feats=feats)
    for b in range(2):
        one = tuple(f[b:b + 1] for f in feats)
        one_b = slice(b, b + 1)
        a1, b1 = run(net, atoms[one_b], bonds[one_b], mask[one_b], t=t[one_b], conditions=cond[one_b], feats=one)
        close(a1[0], atom_logits[b])
        close(b1[0], bond_logits[b])


def test_time_changes_the_prediction():
    net = make_net()
    atoms, bonds, mask = random_graphs(1, 5, 7)
    a1, _ = run(net, atoms, bonds, mask, t=torch.tensor([0.1]))
    a2, _ = run(net, atoms, bonds, mask, t=torch.tensor([0.8]))
    assert (a1 - a2).abs().max() > 1e-3


def test_fresh_network_keeps_the_input_classes_as_a_residual():
    torch.manual_seed(0)
    net = GraphTransformer(hidden_nodes=16, hidden_edges=8, hidden_graph=16, layers=1, heads=2).build(4, [])
    atoms, bonds, mask = random_graphs(1, 5, 8)
    net.node_out[-1].weight.data.zero_()
    net.node_out[-1].bias.data.zero_()
    net.edge_out[-1].weight.data.zero_()
    net.edge_out[-1].bias.data.zero_()
    atom_logits, bond_logits = run(net, atoms, bonds, mask)
    assert torch.equal(atom_logits, nn.functional.one_hot(atoms, 4).float())
    assert torch.equal(bond_logits, nn.functional.one_hot(bonds, 4).float())


# --- conditions -----------------------------------------------------------------------------------
def test_absent_conditions_use_the_absent_embedding():
    net = make_net()
    atoms, bonds, mask = random_graphs(1, 5, 9)
    nan = float("nan")
    absent, _ = run(net, atoms, bonds, mask, conditions=torch.tensor([[nan, nan, nan]]))
    default, _ = run(net, atoms, bonds, mask, conditions=None)  # None means every property absent
    close(absent, default, tol=0)
    given, _ = run(net, atoms, bonds, mask, conditions=torch.tensor([[1.5, nan, nan]]))
    assert (given - absent).abs().max() > 1e-3
    other, _ = run(net, atoms, bonds, mask, conditions=torch.tensor([[-1.5, nan, nan]]))
    assert (given - other).abs().max() > 1e-4  # the value matters, not only its presence
    category, _ = run(net, atoms, bonds, mask, conditions=torch.tensor([[nan, nan, 2.0]]))
    assert (category - absent).abs().max() > 1e-3


def test_condition_encoder_absent_and_present_values():
    torch.manual_seed(0)
    enc = ConditionEncoder([0, 3], dim=8, clusters=4)
    nan = float("nan")
    values = torch.tensor([[nan, nan], [0.5, nan], [nan, 1.0], [0.5, 1.0], [nan, nan]])
    out = enc(values)
    assert out.shape == (5, 8)
    assert torch.equal(out[0], out[4])  # two absent rows are equal whatever else the batch holds
    expected_absent = enc.out(enc.absent.sum(0))
    close(out[0], expected_absent)
    assert not torch.allclose(out[1], out[0]) and not torch.allclose(out[2], out[0])
    assert not torch.allclose(out[3], out[1]) and not torch.allclose(out[3], out[2])
    # an absent value is never looked at: NaN and infinity give the same absent embedding
    close(enc(torch.tensor([[float("inf"), nan]])), out[:1])


def test_condition_encoder_without_properties_gives_zeros():
    enc = ConditionEncoder([], dim=8)
    assert torch.equal(enc(torch.zeros(3, 0)), torch.zeros(3, 8))


def test_unconditional_network_ignores_conditions_argument():
    net = make_net(kinds=[])
    atoms, bonds, mask = random_graphs(1, 4, 10)
    a1, b1 = run(net, atoms, bonds, mask, conditions=None)
    a2, b2 = run(net, atoms, bonds, mask, conditions=torch.zeros(1, 0))
    assert torch.equal(a1, a2) and torch.equal(b1, b2)


def test_feature_widths_are_the_inputs_the_network_expects():
    net = make_net(layers=1)
    assert net.node_in[0].in_features == len(TOKENS) + NODE_FEATURES
    assert net.edge_in[0].in_features == 4 + EDGE_FEATURES
    assert net.graph_in.in_features == GRAPH_FEATURES


def _parameters_without_gradient(layers: int) -> list[str]:
    net = make_net(layers=layers).train()
    atoms, bonds, mask = random_graphs(2, 5, 11, sizes=[5, 3])
    cond = torch.tensor([[0.2, 0.1, 1.0], [-0.3, float("nan"), 0.0]])
    feats = features(atoms, bonds, mask)
    atom_logits, bond_logits = net(atoms, bonds, torch.tensor([0.3, 0.7]), mask, cond, *feats)
    (atom_logits.square().mean() + bond_logits.square().mean()).backward()
    return [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]


def test_gradients_reach_every_parameter_but_the_last_graph_update():
    missing = _parameters_without_gradient(layers=2)
    assert all(name.startswith("blocks.1.y_update.") for name in missing), missing


def test_gradients_reach_every_parameter():
    assert _parameters_without_gradient(layers=2) == []
