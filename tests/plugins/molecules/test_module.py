"""GraphDiffusion: the forward process, the joint noise's limits, conditions, sampling, training.

The data description is written by hand (four atom tokens, one numerical and one categorical
condition), so the expected noise frequencies and limits are computed from it directly. Networks
are tiny (16 node, 8 pair, 16 graph channels, one layer); the few Lightning runs train one or
two steps on a dozen molecules.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("pytorch_lightning")
pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")
from rdkit import Chem  # noqa: E402
from torch import nn  # noqa: E402

from polydiff_molecules.chem import sanitize  # noqa: E402
from polydiff_molecules.data import MoleculeDataModule  # noqa: E402
from polydiff_molecules.module import GraphDenoiser, GraphDiffusion, atom_type_table, check_data_info  # noqa: E402
from polydiff_molecules.nets import GraphTransformer  # noqa: E402

C, N, O, NP = range(4)
INFO = {
    "atom_types": ["C", "N", "O", "N+"],
    "bond_types": ["none", "single", "double", "triple"],
    "atom_marginals": [0.5, 0.2, 0.2, 0.1],
    "bond_marginals": [0.7, 0.2, 0.07, 0.03],
    "bond_given_atom": [[0.6, 0.3, 0.08, 0.02], [0.7, 0.2, 0.05, 0.05], [0.8, 0.1, 0.1, 0.0], [0.5, 0.5, 0.0, 0.0]],
    "atom_given_bond": [[0.4, 0.3, 0.2, 0.1], [0.6, 0.2, 0.1, 0.1], [0.5, 0.1, 0.4, 0.0], [0.7, 0.3, 0.0, 0.0]],
    "num_atoms": [0.0, 0.0, 0.2, 0.3, 0.5],  # 2 to 4 atoms
    "max_atoms": 4,
    "conditions": [
        {"name": "qed", "kind": "numeric", "mean": 0.5, "std": 0.2, "min": 0.1, "max": 0.9},
        {"name": "scaffold", "kind": "categorical", "categories": ["benzene", "pyridine"]},
    ],
}
TINY = dict(hidden_nodes=16, hidden_edges=8, hidden_graph=16, layers=1, heads=2)
SMILES = ["CCO", "CC(=O)O", "c1ccccc1", "Cc1ccccc1", "Oc1ccccc1", "c1ccncc1", "C1CCNCC1", "CCN(CC)CC",
          "OCC(O)CO", "NCC(=O)O", "CC#N", "O=C1CCCC1"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_model(noise: str = "marginal", info=None, seed: int = 0, **kw) -> GraphDiffusion:
    torch.manual_seed(seed)
    kw.setdefault("sample_steps", 3)
    return GraphDiffusion(GraphTransformer(**TINY), noise=noise, data_info=copy.deepcopy(info or INFO), **kw)


def dense(*graphs, n=None):
    """Dense ``atoms, bonds, node_mask`` of ``(atom classes, {(i, j): order})`` graphs."""
    n = n or max(len(a) for a, _ in graphs)
    atoms = torch.zeros(len(graphs), n, dtype=torch.long)
    bonds = torch.zeros(len(graphs), n, n, dtype=torch.long)
    mask = torch.zeros(len(graphs), n, dtype=torch.bool)
    for b, (a, edges) in enumerate(graphs):
        atoms[b, :len(a)] = torch.tensor(a)
        mask[b, :len(a)] = True
        for (i, j), order in edges.items():
            bonds[b, i, j] = bonds[b, j, i] = order
    return atoms, bonds, mask


ACID = ([C, O, O, C], {(0, 1): 2, (0, 2): 1, (0, 3): 1})  # acetic acid
AMMONIUM = ([NP, C, C, C, C], {(0, 1): 1, (0, 2): 1, (0, 3): 1, (0, 4): 1})
NITRILE = ([C, C, N], {(0, 1): 1, (1, 2): 3})


def table(key: str) -> torch.Tensor:
    return torch.tensor(INFO[key], dtype=torch.float64)


def frequencies(values: torch.Tensor, k: int) -> torch.Tensor:
    return torch.bincount(values.reshape(-1), minlength=k).double() / values.numel()


def pair_values(bonds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = bonds.shape[-1]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool), 1) & mask[:, :, None] & mask[:, None, :]
    return bonds[upper]


def same(a: tuple, b: tuple) -> bool:
    return all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def assert_graph_shape(atoms, bonds, mask):
    """Symmetric bonds, zero on the diagonal and padding; atoms zero on padding."""
    assert torch.equal(bonds, bonds.transpose(1, 2))
    assert not torch.diagonal(bonds, dim1=1, dim2=2).any()
    pair = mask[:, :, None] & mask[:, None, :]
    assert not bonds[~pair].any()
    assert not atoms[~mask].any()


# --- the data description -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, field",
    [
        (lambda i: i.pop("bond_given_atom"), "bond_given_atom"),
        (lambda i: i.pop("conditions"), "conditions"),
        (lambda i: i.update(atom_marginals=[0.5, 0.5]), "atom_marginals"),
        (lambda i: i.update(bond_marginals=[0.5, 0.3, 0.2]), "bond_marginals"),
        (lambda i: i.update(bond_given_atom=INFO["bond_given_atom"][:3]), "bond_given_atom"),
        (lambda i: i.update(atom_given_bond=[row[:3] for row in INFO["atom_given_bond"]]), "atom_given_bond"),
        (lambda i: i.update(conditions=[{"name": "qed", "kind": "number"}]), "'qed' has kind 'number'"),
    ],
    ids=["missing-bga", "missing-conditions", "atom-marginals", "bond-marginals", "bga-rows", "agb-columns", "kind"],
)
def test_check_data_info_names_the_bad_field(change, field):
    info = copy.deepcopy(INFO)
    change(info)
    with pytest.raises(ValueError, match="data_info") as err:
        check_data_info(info)
    assert field in str(err.value)
    with pytest.raises(ValueError, match="data_info"):
        GraphDiffusion(GraphTransformer(**TINY), data_info=info)


def test_check_data_info_accepts_the_description_and_refuses_non_mappings():
    assert check_data_info(INFO) == INFO
    with pytest.raises(ValueError, match="mapping"):
        check_data_info([("atom_types", ["C"])])


def test_constructor_refuses_bad_arguments():
    with pytest.raises(TypeError, match="GraphTransformer"):
        GraphDiffusion(nn.Linear(2, 2))
    for kw, match in [({"noise": "uniform"}, "noise"), ({"edge_weight": 0.0}, "edge_weight"),
                      ({"property_dropout": 1.0}, "property_dropout"), ({"val_sample_steps": 0}, "val_sample")]:
        with pytest.raises(ValueError, match=match):
            GraphDiffusion(GraphTransformer(**TINY), **kw)


def test_model_without_data_description_says_so():
    model = GraphDiffusion(GraphTransformer(**TINY))
    with pytest.raises(RuntimeError, match="no data description"):
        model.sample_graphs(2)
    with pytest.raises(RuntimeError, match="no data description"):
        model.encode_conditions({"qed": 0.5})


def test_configure_data_builds_the_network_and_tables():
    model = make_model()
    assert model.denoiser.num_atom_types == 4 and model.denoiser.condition_kinds == [0, 2]
    assert model.atom_types == ["C", "N", "O", "N+"] and model.condition_names == ["qed", "scaffold"]
    assert model.max_valence.tolist() == [4.0, 3.0, 2.0, 4.0]
    torch.testing.assert_close(model.atom_weight, torch.tensor([12.011, 14.007, 15.999, 14.007]))
    assert model.atom_schedule.num_classes == 4 and model.bond_schedule.num_classes == 4
    # the EMA copy is of the built network (same parameter names)
    assert [n for n, _ in model.ema.module.named_parameters()] == [n for n, _ in model.denoiser.named_parameters()]


def test_atom_type_table_uses_isoelectronic_valences_for_charges():
    valence, mass = atom_type_table(["N+", "O-", "S", "Cl", "C-"])
    assert valence.tolist() == [4.0, 1.0, 6.0, 1.0, 3.0]  # N+ as C, O- as F, C- as N
    torch.testing.assert_close(mass, torch.tensor([14.007, 15.999, 32.067, 35.453, 12.011]), atol=2e-3, rtol=0)


# --- the forward process --------------------------------------------------------------------------
@pytest.mark.parametrize("noise", ["marginal", "joint"])
def test_corrupt_at_time_zero_is_the_clean_graph(noise):
    model = make_model(noise)
    atoms, bonds, mask = dense(ACID, AMMONIUM, NITRILE)
    noisy_atoms, noisy_bonds = model.corrupt(atoms, bonds, mask, torch.zeros(3), _gen(0))
    assert torch.equal(noisy_atoms, atoms) and torch.equal(noisy_bonds, bonds)


@pytest.mark.parametrize("noise", ["marginal", "joint"])
def test_noisy_graphs_are_symmetric_and_masked(noise):
    model = make_model(noise)
    atoms, bonds, mask = dense(*([ACID, AMMONIUM, NITRILE] * 20))
    for t in (0.3, 0.7, 1.0):
        noisy_atoms, noisy_bonds = model.corrupt(atoms, bonds, mask, torch.full((60,), t), _gen(1))
        assert_graph_shape(noisy_atoms, noisy_bonds, mask)
        assert noisy_atoms.max() < 4 and noisy_bonds.max() < 4


def test_marginal_noise_at_time_one_draws_the_marginals():
    model = make_model("marginal")
    atoms, bonds, mask = dense(*([AMMONIUM] * 600))  # all clean atoms C or N+, all bonds single or none
    noisy_atoms, noisy_bonds = model.corrupt(atoms, bonds, mask, torch.ones(600), _gen(2))
    # 3000 atoms and 6000 pairs: 0.02 is over four standard deviations for every class
    torch.testing.assert_close(frequencies(noisy_atoms[mask], 4), table("atom_marginals"), atol=0.025, rtol=0)
    torch.testing.assert_close(frequencies(pair_values(noisy_bonds, mask), 4),
                               torch.tensor(INFO["bond_marginals"], dtype=torch.float64), atol=0.02, rtol=0)


def test_marginal_noise_keeps_a_fraction_alpha_bar_plus_chance():
    model = make_model("marginal")
    atoms, bonds, mask = dense(*([([C] * 4, {})] * 1000))
    t = 0.5
    noisy_atoms, _ = model.corrupt(atoms, bonds, mask, torch.full((1000,), t), _gen(3))
    ab = float(model.atom_schedule.alpha_bar(t))
    expected = ab + (1 - ab) * INFO["atom_marginals"][C]  # kept, or redrawn as C
    assert abs((noisy_atoms[mask] == C).double().mean().item() - expected) < 0.025


def test_joint_noise_at_time_one_draws_each_elements_limit():
    model = make_model("joint")
    # unbonded carbons: atoms from the plain marginals, every pair from bond_given_atom[C]
    atoms, bonds, mask = dense(*([([C] * 4, {})] * 600))
    noisy_atoms, noisy_bonds = model.corrupt(atoms, bonds, mask, torch.ones(600), _gen(4))
    torch.testing.assert_close(frequencies(noisy_atoms[mask], 4), table("atom_marginals"), atol=0.025, rtol=0)
    torch.testing.assert_close(frequencies(pair_values(noisy_bonds, mask), 4),
                               torch.tensor(INFO["bond_given_atom"][C], dtype=torch.float64), atol=0.025, rtol=0)
    # the middle atom of O-O-O (two single bonds): (m_X + 2 m_X|single) / 3; its pairs: from O's row
    atoms, bonds, mask = dense(*([([O, O, O], {(0, 1): 1, (1, 2): 1})] * 2000))
    noisy_atoms, noisy_bonds = model.corrupt(atoms, bonds, mask, torch.ones(2000), _gen(5))
    m, agb = table("atom_marginals"), table("atom_given_bond")
    torch.testing.assert_close(frequencies(noisy_atoms[:, 1], 4), (m + 2 * agb[1]) / 3, atol=0.03, rtol=0)
    torch.testing.assert_close(frequencies(noisy_atoms[:, 0], 4), (m + agb[1]) / 2, atol=0.03, rtol=0)
    torch.testing.assert_close(frequencies(pair_values(noisy_bonds, mask), 4),
                               torch.tensor(INFO["bond_given_atom"][O], dtype=torch.float64), atol=0.025, rtol=0)


def test_element_limits_by_hand():
    model = make_model("joint")
    # C(=O)(-N+) plus a padding atom
    atoms, bonds, mask = dense(([C, O, NP], {(0, 1): 2, (0, 2): 1}), n=4)
    atom_limit, bond_limit = model.element_limits(nn.functional.one_hot(atoms, 4).double(),
                                                  nn.functional.one_hot(bonds, 4).double(), mask)
    m = torch.tensor(INFO["atom_marginals"], dtype=torch.float64)
    agb = torch.tensor(INFO["atom_given_bond"], dtype=torch.float64)
    bga = torch.tensor(INFO["bond_given_atom"], dtype=torch.float64)
    # atom i: (m_X + sum over its bonds of m_X|bond) / (1 + degree)
    torch.testing.assert_close(atom_limit[0, 0], (m + agb[2] + agb[1]) / 3)
    torch.testing.assert_close(atom_limit[0, 1], (m + agb[2]) / 2)
    torch.testing.assert_close(atom_limit[0, 2], (m + agb[1]) / 2)
    torch.testing.assert_close(atom_limit[0, 3], m)  # a padding atom has no bonds
    # pair ij: (m_E|x_i + m_E|x_j) / 2
    torch.testing.assert_close(bond_limit[0, 0, 1], (bga[C] + bga[O]) / 2)
    torch.testing.assert_close(bond_limit[0, 1, 2], (bga[O] + bga[NP]) / 2)
    torch.testing.assert_close(bond_limit[0, 2, 0], (bga[NP] + bga[C]) / 2)
    torch.testing.assert_close(atom_limit.sum(-1), torch.ones(1, 4, dtype=torch.float64))
    # soft predictions: the bond limit is the expectation over both ends
    probs = torch.tensor([[0.25, 0.25, 0.5, 0.0]], dtype=torch.float64).expand(1, 4, 4)
    _, soft = model.element_limits(probs, nn.functional.one_hot(bonds, 4).double(), mask)
    torch.testing.assert_close(soft[0, 0, 1], 0.25 * bga[C] + 0.25 * bga[N] + 0.5 * bga[O])


# --- conditions -----------------------------------------------------------------------------------
def test_encode_conditions_standardises_and_looks_up_categories():
    model = make_model()
    values, notes = model.encode_conditions({"qed": 0.7, "scaffold": "pyridine"})
    torch.testing.assert_close(values, torch.tensor([1.0, 1.0]))  # (0.7 - 0.5) / 0.2, index 1
    assert notes == []
    values, _ = model.encode_conditions({"scaffold": "benzene"})
    assert math.isnan(values[0]) and values[1].item() == 0.0
    values, _ = model.encode_conditions(None)
    assert values.shape == (2,) and torch.isnan(values).all()
    values, _ = model.encode_conditions({"qed": "0.3"})  # numbers given as text are read
    torch.testing.assert_close(values[0], torch.tensor(-1.0))


def test_encode_conditions_refuses_unknown_names_categories_and_values():
    model = make_model()
    with pytest.raises(KeyError) as err:
        model.encode_conditions({"qed": 0.5, "logp": 2.0})
    assert "logp" in err.value.args[0] and "trained conditions: qed, scaffold" in err.value.args[0]
    with pytest.raises(ValueError, match=r"scaffold='furan'.*\['benzene', 'pyridine'\]"):
        model.encode_conditions({"scaffold": "furan"})
    with pytest.raises(ValueError, match="qed must be a number"):
        model.encode_conditions({"qed": "high"})
    with pytest.raises(ValueError, match="finite"):
        model.encode_conditions({"qed": float("nan")})


def test_encode_conditions_notes_how_far_out_of_range_a_value_is():
    model = make_model()
    values, notes = model.encode_conditions({"qed": 1.3})
    torch.testing.assert_close(values[0], torch.tensor(4.0))  # kept: the model extrapolates
    assert len(notes) == 1
    assert "qed=1.3 is 0.4 above the training maximum 0.9 (2.00 training standard deviations)" in notes[0]
    _, notes = model.encode_conditions({"qed": 0.0})
    assert "0.1 below the training minimum 0.1 (0.50 training standard deviations)" in notes[0]
    _, notes = model.encode_conditions({"qed": 0.9})  # the edge itself is in range
    assert notes == []


def test_unconditional_model_has_no_conditions_to_encode():
    model = make_model(info={**INFO, "conditions": []})
    assert model.encode_conditions(None) == (None, [])
    with pytest.raises(KeyError, match="none \\(the model is unconditional\\)"):
        model.encode_conditions({"qed": 0.5})


def test_numeric_category_labels_accept_numbers():
    info = {**INFO, "conditions": [{"name": "rings", "kind": "categorical", "categories": ["0", "1", "2"]}]}
    model = make_model(info=info)
    assert model.encode_conditions({"rings": "2"})[0].tolist() == [2.0]  # text works
    assert model.encode_conditions({"rings": 2.0})[0].tolist() == [2.0]


# --- sampling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", ["marginal", "joint"])
def test_sample_graphs_shapes_symmetry_and_sizes(noise):
    model = make_model(noise)
    atoms, bonds, mask = model.sample_graphs(12, steps=3, generator=_gen(0))
    n = atoms.shape[1]
    assert atoms.shape == (12, n) and bonds.shape == (12, n, n) and mask.shape == (12, n)
    assert n == int(mask.sum(1).max()) <= 4
    assert set(mask.sum(1).tolist()) <= {2, 3, 4}  # sizes from num_atoms
    assert torch.equal(mask, torch.arange(n)[None] < mask.sum(1, keepdim=True))  # real atoms first
    assert_graph_shape(atoms, bonds, mask)
    assert atoms.max() < 4 and bonds.max() < 4
    assert model.training  # the mode is restored


def test_sample_graphs_with_fixed_sizes():
    model = make_model()
    atoms, bonds, mask = model.sample_graphs(3, num_atoms=6, steps=2, generator=_gen(1))
    assert atoms.shape == (3, 6) and bool(mask.all())
    atoms, bonds, mask = model.sample_graphs(3, num_atoms=[2, 5, 3], steps=2, generator=_gen(1))
    assert mask.sum(1).tolist() == [2, 5, 3] and atoms.shape == (3, 5)
    assert_graph_shape(atoms, bonds, mask)
    for bad in (0, [2, 3], [2, 0, 3]):
        with pytest.raises(ValueError, match="num_atoms"):
            model.sample_graphs(3, num_atoms=bad, steps=2)
    with pytest.raises(ValueError, match="count"):
        model.sample_graphs(0)


def test_sample_graphs_is_reproducible_with_a_seeded_generator():
    model = make_model("joint")
    cond, _ = model.encode_conditions({"qed": 0.8})
    first = model.sample_graphs(6, conditions=cond, steps=3, generator=_gen(7))
    again = model.sample_graphs(6, conditions=cond, steps=3, generator=_gen(7))
    other = model.sample_graphs(6, conditions=cond, steps=3, generator=_gen(8))
    assert same(first, again)
    assert not same(first, other)


def test_guided_sampling_runs_and_differs_from_plain_sampling():
    model = make_model("joint")
    with torch.no_grad():  # a network whose conditioning matters
        for name, p in model.denoiser.named_parameters():
            if "mod_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=_gen(9)))
    cond, _ = model.encode_conditions({"qed": 0.8, "scaffold": "benzene"})
    plain = model.sample_graphs(8, num_atoms=4, conditions=cond, guidance=1.0, steps=3, generator=_gen(3))
    guided = model.sample_graphs(8, num_atoms=4, conditions=cond, guidance=3.0, steps=3, generator=_gen(3))
    again = model.sample_graphs(8, num_atoms=4, conditions=cond, guidance=3.0, steps=3, generator=_gen(3))
    assert_graph_shape(*guided)
    assert same(guided, again)
    assert not same(plain, guided)
    # per-graph conditions (count, P) are accepted too
    rows = torch.stack([cond, torch.full_like(cond, float("nan"))])
    atoms, _, _ = model.sample_graphs(2, num_atoms=3, conditions=rows, guidance=2.0, steps=2, generator=_gen(4))
    assert atoms.shape == (2, 3)


def test_denoiser_gives_padding_certain_class_zero():
    model = make_model()
    atoms, bonds, mask = dense(ACID, NITRILE)
    atom_probs, bond_probs = model.wrapped()((atoms, bonds), torch.tensor([0.5, 0.5]),
                                             {"node_mask": mask, "values": None})
    torch.testing.assert_close(atom_probs.sum(-1), torch.ones(2, 4))
    torch.testing.assert_close(bond_probs.sum(-1), torch.ones(2, 4, 4))
    assert atom_probs[1, 3].tolist() == [1.0, 0.0, 0.0, 0.0]  # padding atom
    assert bond_probs[1, 0, 3].tolist() == [1.0, 0.0, 0.0, 0.0]  # pair with padding
    assert bond_probs[0, 2, 2].tolist() == [1.0, 0.0, 0.0, 0.0]  # diagonal
    dropped = GraphDenoiser.drop_cond({"node_mask": mask, "values": torch.tensor([[1.0, 0.0], [0.5, 1.0]])},
                                      torch.tensor([True, False]))
    assert torch.isnan(dropped["values"][0]).all() and dropped["values"][1].tolist() == [0.5, 1.0]


def test_prediction_for_a_molecule_does_not_depend_on_its_batch():
    model = make_model()
    with torch.no_grad():  # a network that reads the graph-level features
        for name, p in model.denoiser.named_parameters():
            if "mod_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=_gen(9)))

    def predict(*graphs):
        atoms, bonds, mask = dense(*graphs)
        with torch.no_grad():
            return model.wrapped()((atoms, bonds), torch.full((len(graphs),), 0.5), {"node_mask": mask, "values": None})

    alone_atoms, alone_bonds = predict(ACID)
    batch_atoms, batch_bonds = predict(ACID, AMMONIUM)  # padded from 4 to 5 atoms
    torch.testing.assert_close(batch_atoms[0, :4], alone_atoms[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch_bonds[0, :4, :4], alone_bonds[0], atol=1e-5, rtol=1e-5)


def test_to_molecules_reads_the_graphs_back():
    model = make_model()
    atoms, bonds, mask = dense(ACID, AMMONIUM, NITRILE)
    mols = model.to_molecules(atoms, bonds, mask)
    smiles = [Chem.MolToSmiles(sanitize(m)[0]) for m in mols]
    assert smiles == ["CC(=O)O", "C[N+](C)(C)C", "CC#N"]


def test_generate_batches_warns_and_fixes_sizes():
    model = make_model()
    calls = []
    with pytest.warns(UserWarning, match="above the training maximum"):
        mols = model.generate(5, num_atoms=3, conditions={"qed": 2.0}, steps=2, batch_size=2,
                              generator=_gen(0), progress=lambda done, total: calls.append((done, total)))
    assert len(mols) == 5 and all(m.GetNumAtoms() == 3 for m in mols)
    assert calls == [(2, 5), (4, 5), (5, 5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(model.generate(2, steps=2, generator=_gen(1))) == 2


# --- training -------------------------------------------------------------------------------------
def _batch():
    atoms, bonds, mask = dense(ACID, AMMONIUM, NITRILE, ([C, C, O], {(0, 1): 1, (1, 2): 1}))
    values = torch.tensor([[0.5, 0.0], [-1.0, float("nan")], [1.0, 1.0], [0.0, 0.0]])
    return {"atoms": atoms, "bonds": bonds, "node_mask": mask, "values": values}


def _eval_loss(model, parts, seeds=range(6)) -> float:
    with torch.no_grad():
        return sum(float(model.compute_loss(parts, generator=_gen(s), drop_cond=False)) for s in seeds) / len(seeds)


@pytest.mark.parametrize("noise", ["marginal", "joint"])
def test_a_few_optimiser_steps_overfit_a_tiny_batch(noise):
    model = make_model(noise, cond_dropout=0.0, property_dropout=0.0)
    parts = _batch()
    before = _eval_loss(model, parts)
    optimiser = torch.optim.Adam(model.denoiser.parameters(), lr=1e-2)
    for step in range(60):
        optimiser.zero_grad()
        loss = model.compute_loss(parts, generator=_gen(100 + step))
        loss.backward()
        optimiser.step()
    after = _eval_loss(model, parts)
    assert math.isfinite(before) and after < 0.7 * before, (before, after)


def test_loss_weights_bonds_by_edge_weight():
    parts = _batch()
    one = make_model(edge_weight=1.0)
    five = make_model(edge_weight=5.0)
    five.denoiser.load_state_dict(one.denoiser.state_dict())
    total1, atom1, bond1 = one._losses(parts, None, _gen(0), False)
    total5, atom5, bond5 = five._losses(parts, None, _gen(0), False)
    torch.testing.assert_close(atom1, atom5)
    torch.testing.assert_close(bond1, bond5)
    torch.testing.assert_close(total5, atom5 + 5 * bond5)
    torch.testing.assert_close(total1, atom1 + bond1)


def test_condition_dropout_blanks_rows_and_single_properties():
    model = make_model(cond_dropout=0.5, property_dropout=0.3)
    values = torch.zeros(4000, 2)
    dropped = model._dropped_values(values, _gen(0))
    absent = torch.isnan(dropped)
    both = absent.all(1).double().mean().item()
    assert abs(absent.double().mean().item() - (0.5 + 0.5 * 0.3)) < 0.03  # each property absent
    assert abs(both - (0.5 + 0.5 * 0.3 ** 2)) < 0.03  # whole rows dropped, or both by chance
    assert torch.equal(dropped[~absent], values[~absent])


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("mol-module") / "train.csv"
    path.write_text("smiles\n" + "\n".join(SMILES) + "\n")
    return path


def _trainer(max_steps: int) -> pl.Trainer:
    return pl.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", devices=1, limit_val_batches=0,
                      num_sanity_val_steps=0)


@pytest.mark.parametrize("noise, conditions", [("marginal", []), ("joint", ["qed", "logp"])])
def test_lightning_trains_both_noise_models_from_a_data_module(train_csv, noise, conditions):
    data = MoleculeDataModule(str(train_csv), conditions=conditions, batch_size=4, val_fraction=0.0)
    torch.manual_seed(0)
    model = GraphDiffusion(GraphTransformer(**TINY), noise=noise, val_samples=0, sample_steps=2)
    _trainer(2).fit(model, datamodule=data)
    info = data.info()
    assert model.data_info["atom_types"] == info["atom_types"] and model.condition_names == conditions
    assert model.denoiser.num_atom_types == len(info["atom_types"])
    assert int(model.ema.num_updates) == 2
    trained = dict(model.denoiser.named_parameters())
    assert any(not torch.equal(p, trained[name]) for name, p in model.ema.module.named_parameters())
    atoms, bonds, mask = model.sample_graphs(3, steps=2, generator=_gen(0))
    assert_graph_shape(atoms, bonds, mask)


def test_setup_refuses_data_with_other_atom_types(train_csv):
    data = MoleculeDataModule(str(train_csv), batch_size=4, val_fraction=0.0)
    model = make_model(info={**INFO, "conditions": []})
    with pytest.raises(ValueError, match="differ from the model's"):
        _trainer(1).fit(model, datamodule=data)


def test_unpack_batch_round_trips_the_molecules(train_csv):
    data = MoleculeDataModule(str(train_csv), conditions=["qed"], batch_size=len(SMILES), val_fraction=0.0)
    batch = next(iter(data.train_dataloader()))
    torch.manual_seed(0)
    model = GraphDiffusion(GraphTransformer(**TINY), data_info=data.info())
    parts = model.unpack_batch(batch)
    largest = max(Chem.MolFromSmiles(s).GetNumAtoms() for s in SMILES)
    assert parts["atoms"].shape == (len(SMILES), largest)
    assert_graph_shape(parts["atoms"], parts["bonds"], parts["node_mask"])
    assert parts["values"].shape == (len(SMILES), 1)
    got = [Chem.MolToSmiles(sanitize(m)[0], isomericSmiles=False) for m in model.to_molecules(
        parts["atoms"], parts["bonds"], parts["node_mask"])]
    assert got == list(batch.smiles)
    assert sorted(got) == sorted(Chem.MolToSmiles(Chem.MolFromSmiles(s), isomericSmiles=False) for s in SMILES)
