"""The marginal baseline: random graphs with the training set's atom and bond frequencies.

:func:`sample_marginal_graphs` draws molecules from the product distribution that discrete
diffusion with marginal transitions converges to at its last step (Vignac et al. 2023,
"DiGress: discrete denoising diffusion for graph generation", Sec. 4.1): the number of heavy
atoms n from the training distribution of atom counts, each of the n atom types independently
from the atom-type marginals, and each of the n (n - 1) / 2 unordered atom pairs independently
from the bond-class marginals (class 0: not bonded). It is what a denoiser that learned nothing
would produce, so every trained model should beat its validity, connectivity and KL score by a
wide margin; it also checks the metrics' lower end (most of its graphs violate valences).

The marginals come from :meth:`polydiff_molecules.data.MoleculeDataModule.info`; the graphs are
built unsanitised by :func:`polydiff_molecules.chem.graph_to_mol`, exactly as the model's
samples are, so the same evaluation applies to both.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import Any

import torch
from rdkit import Chem

__all__ = ["sample_marginal_graphs"]


def _distribution(info: Mapping[str, Any], key: str, size: int | None = None) -> torch.Tensor:
    """``info[key]`` as a float64 probability vector, checked (and normalised)."""
    if key not in info:
        raise KeyError(f"info has no {key!r} (keys: {', '.join(map(str, info))}); pass the data module's info()")
    probs = torch.as_tensor(info[key], dtype=torch.float64).reshape(-1)
    if size is not None and probs.numel() != size:
        raise ValueError(f"info[{key!r}] has {probs.numel()} entries, expected {size}")
    if not torch.isfinite(probs).all() or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"info[{key!r}] must hold non-negative finite probabilities with a positive sum, got {probs.tolist()}")
    return probs / probs.sum()


def sample_marginal_graphs(
    info: Mapping[str, Any],
    count: int,
    generator: torch.Generator | None = None,
    num_atoms: int | None = None,
) -> list[Chem.RWMol]:
    """Draw ``count`` graphs from the marginal (limit) distribution of the training data.

    Args:
        info: the data module's ``info()``: ``atom_types`` (K_a tokens), ``atom_marginals``
            (K_a), ``bond_marginals`` (4, over none/single/double/triple) and ``num_atoms``
            (probability of each heavy-atom count, index n).
        count: the number of graphs, >= 0.
        generator: a torch random generator for reproducible draws (the global one if None).
        num_atoms: give every graph this many atoms instead of drawing the count.

    Returns:
        ``count`` unsanitised molecules from :func:`~polydiff_molecules.chem.graph_to_mol`
        (most are invalid: the baseline ignores valences).

    Raises:
        KeyError: if ``info`` lacks one of the keys above.
        ValueError: on a malformed distribution, a negative ``count``, or ``num_atoms`` < 1.
    """
    from polydiff_molecules.chem import graph_to_mol

    if isinstance(count, bool) or not isinstance(count, Integral) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    count = int(count)
    if "atom_types" not in info:
        raise KeyError(f"info has no 'atom_types' (keys: {', '.join(map(str, info))}); pass the data module's info()")
    tokens = list(info["atom_types"])
    atom_probs = _distribution(info, "atom_marginals", len(tokens))
    bond_probs = _distribution(info, "bond_marginals", 4)
    if num_atoms is None:
        size_probs = _distribution(info, "num_atoms").clone()
        size_probs[0] = 0.0  # a graph without atoms is not a molecule
        if size_probs.sum() <= 0:
            raise ValueError("info['num_atoms'] puts all its mass on 0 atoms")
        sizes = torch.multinomial(size_probs, count, replacement=True, generator=generator).tolist() if count else []
    else:
        if isinstance(num_atoms, bool) or not isinstance(num_atoms, Integral) or num_atoms < 1:
            raise ValueError(f"num_atoms must be an integer >= 1, got {num_atoms!r}")
        sizes = [int(num_atoms)] * count
    mols = []
    for n in sizes:
        atoms = torch.multinomial(atom_probs, n, replacement=True, generator=generator)
        bonds = torch.zeros(n, n, dtype=torch.long)
        rows, cols = torch.triu_indices(n, n, offset=1)
        if rows.numel():
            classes = torch.multinomial(bond_probs, rows.numel(), replacement=True, generator=generator)
            bonds[rows, cols] = classes
            bonds[cols, rows] = classes
        mols.append(graph_to_mol([tokens[a] for a in atoms.tolist()], bonds))
    return mols
