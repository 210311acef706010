"""Discrete graph diffusion over atom and bond classes (DiGress), conditioned on properties (Graph DiT).

A molecule is a dense graph: atom classes ``(N,)`` from the vocabulary learned on the training
set and bond classes ``(N, N)`` (none, single, double, triple), symmetric. The forward process
keeps every atom and every bond with probability ``ᾱ_t`` and otherwise redraws it
(:mod:`polydiff.discrete`):

- ``noise="marginal"`` (DiGress, Vignac et al. 2023): atoms from the training atom marginals and
  bonds from the training bond marginals, independently;
- ``noise="joint"`` (Graph DiT's graph-dependent noise, Liu et al. 2024): the two are corrupted
  jointly: a redrawn atom comes from the atom-type distribution that its clean bonds imply
  (the average of the atom marginal and, per bond, the distribution of atom types at the end of
  a bond of that type), and a redrawn bond from the bond-type distribution that its clean atoms
  imply (the average, over its two ends, of the distribution of bond types at an atom of that
  type). Each element's chain is then the core's keep-or-redraw chain toward its own limit, so
  training samples are exact; in sampling the limits are computed from the predicted clean graph
  (their expectation under the prediction) and the start state uses the plain marginals, to
  which the per-element limits average over the data.

The denoiser (:class:`~polydiff_molecules.nets.GraphTransformer`) predicts clean-class
probabilities from the noisy graph, structural features recomputed from it
(:mod:`polydiff_molecules.features`), the time and the conditions; training minimises the
cross-entropy of atoms plus ``edge_weight`` times that of bonds (DiGress uses 5). The number of
atoms is drawn from the training distribution or fixed. Conditions are dropped (all, with
probability ``cond_dropout``, or one property at a time, with ``property_dropout``) so that one
network serves unconditional sampling, any subset of the properties, and classifier-free
guidance with a scale per call.

Everything the model learned from the data (vocabulary, marginals, size distribution, property
statistics) is ``data_info``, plain data kept in the checkpoint and in its recorded model config,
so :func:`polydiff.checkpoint.load_module` rebuilds a trained model without the data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from polydiff.discrete import MarginalTransitions, categorical_loss, sample_categorical
from polydiff.module import DiffusionModule
from polydiff_molecules.features import graph_features
from polydiff_molecules.nets import NUM_BOND_TYPES, GraphTransformer

__all__ = ["GraphDiffusion", "GraphDenoiser", "NoiseModel", "atom_type_table", "check_data_info"]

NoiseModel = Literal["marginal", "joint"]

_INFO_KEYS = ("atom_types", "atom_marginals", "bond_marginals", "bond_given_atom", "atom_given_bond",
              "num_atoms", "max_atoms", "conditions")


def check_data_info(info: Any) -> dict[str, Any]:
    """Raise a ValueError naming the first missing or malformed field of a data description."""
    if not isinstance(info, Mapping):
        raise ValueError(f"data_info must be a mapping, got {type(info).__name__}")
    missing = [k for k in _INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"data_info lacks the fields {missing}")
    k = len(info["atom_types"])
    if k < 1 or len(info["atom_marginals"]) != k:
        raise ValueError(f"data_info: atom_marginals has {len(info['atom_marginals'])} entries for {k} atom types")
    if len(info["bond_marginals"]) != NUM_BOND_TYPES:
        raise ValueError(f"data_info: bond_marginals must have {NUM_BOND_TYPES} entries")
    if [len(r) for r in info["bond_given_atom"]] != [NUM_BOND_TYPES] * k:
        raise ValueError(f"data_info: bond_given_atom must be {k} x {NUM_BOND_TYPES}")
    if [len(r) for r in info["atom_given_bond"]] != [k] * NUM_BOND_TYPES:
        raise ValueError(f"data_info: atom_given_bond must be {NUM_BOND_TYPES} x {k}")
    for cond in info["conditions"]:
        if cond.get("kind") not in ("numeric", "categorical"):
            raise ValueError(f"data_info: condition {cond.get('name')!r} has kind {cond.get('kind')!r}")
    return dict(info)


def atom_type_table(tokens: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Largest allowed valence and heavy-atom mass of each atom token (e.g. ``"N+"``).

    A charged atom has the valences of the element with as many electrons (``N+`` as C, ``O-``
    as F), RDKit's own rule for charged atoms.

    Shapes:
        returns two float32 tensors (K,).
    """
    from rdkit import Chem

    from polydiff_molecules.chem import parse_token

    table = Chem.GetPeriodicTable()
    valences, masses = [], []
    for token in tokens:
        symbol, charge = parse_token(token)
        number = table.GetAtomicNumber(symbol)
        iso = min(max(number - charge, 1), 118)
        allowed = [v for v in table.GetValenceList(iso) if v >= 0]
        valences.append(float(max(allowed)) if allowed else 4.0)
        masses.append(float(table.GetAtomicWeight(number)))
    return torch.tensor(valences), torch.tensor(masses)


class GraphDenoiser(nn.Module):
    """The core's ``denoiser(x_t, t, cond) -> clean-class probabilities`` around a graph transformer.

    ``x_t`` is ``(atoms (B, N), bonds (B, N, N))``; ``cond`` is ``{"node_mask": (B, N) bool,
    "values": (B, P) float or None}`` with NaN for absent properties. Padding atoms and pairs, and
    the diagonal, are given certain class-0 predictions.
    """

    prediction = "x0"

    def __init__(self, net: GraphTransformer, max_valence: Tensor, atom_weight: Tensor):
        super().__init__()
        self.net = net
        self.max_valence, self.atom_weight = max_valence, atom_weight

    def logits(self, atoms: Tensor, bonds: Tensor, t: Tensor, cond: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        node_mask = cond["node_mask"]
        feats = graph_features(atoms, bonds, node_mask, self.max_valence.to(atoms.device),
                               self.atom_weight.to(atoms.device))
        return self.net(atoms, bonds, t, node_mask, cond.get("values"), *feats)

    def forward(self, x: tuple[Tensor, Tensor], t: Tensor, cond: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        atoms, bonds = x
        atom_logits, bond_logits = self.logits(atoms, bonds, t, cond)
        return _clean_probs(atom_logits.float().softmax(-1), bond_logits.float().softmax(-1), cond["node_mask"])

    @staticmethod
    def drop_cond(cond: Mapping[str, Any], mask: Tensor) -> dict[str, Any]:
        """The same graphs with every property of the masked samples absent (NaN)."""
        values = cond.get("values")
        out = dict(cond)
        if values is not None:
            out["values"] = values.masked_fill(mask[:, None].to(values.device), float("nan"))
        return out


def _pair_mask(node_mask: Tensor) -> Tensor:
    n = node_mask.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=node_mask.device)
    return node_mask[:, :, None] & node_mask[:, None, :] & ~eye


def _clean_probs(atom_probs: Tensor, bond_probs: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Certain class 0 on padding (atoms), on pairs with padding and on the diagonal (bonds)."""
    zero_atom = torch.zeros_like(atom_probs)
    zero_atom[..., 0] = 1.0
    zero_bond = torch.zeros_like(bond_probs)
    zero_bond[..., 0] = 1.0
    atoms = torch.where(node_mask[..., None], atom_probs, zero_atom)
    bonds = torch.where(_pair_mask(node_mask)[..., None], bond_probs, zero_bond)
    return atoms, bonds


def _symmetrize(bonds: Tensor, node_mask: Tensor) -> Tensor:
    """Upper triangle mirrored to the lower one, zero on padding and on the diagonal."""
    upper = torch.triu(bonds, diagonal=1)
    return (upper + upper.transpose(1, 2)) * _pair_mask(node_mask)


class GraphDiffusion(DiffusionModule):
    """DiGress / Graph DiT on dense molecular graphs; see the module docstring.

    Args:
        denoiser: the graph transformer (its data-dependent layers are built from ``data_info``).
        noise: ``marginal`` (DiGress) or ``joint`` (Graph DiT's graph-dependent noise).
        edge_weight: weight of the bond cross-entropy relative to the atoms'.
        cond_dropout: probability of dropping all of a molecule's conditions in training.
        property_dropout: probability of dropping each property on its own in training.
        ema_decay, ema_start: the EMA of the weights (see :class:`~polydiff.module.DiffusionModule`).
        sample_steps: default number of sampling steps.
        guidance: default classifier-free guidance scale (1 = none).
        val_samples: molecules generated at each validation (0: none); their validity,
            uniqueness and connectedness are logged.
        val_sample_steps: sampling steps for those.
        optimizer, lr_scheduler, lr_scheduler_interval: as in ``DiffusionModule``.
        data_info: what was learned from the training data (set from the data module in
            ``setup`` when not given; recorded in checkpoints).
    """

    def __init__(
        self,
        denoiser: GraphTransformer,
        noise: NoiseModel = "marginal",
        edge_weight: float = 5.0,
        cond_dropout: float = 0.1,
        property_dropout: float = 0.2,
        ema_decay: float = 0.999,
        ema_start: int = 0,
        sample_steps: int = 100,
        guidance: float = 1.0,
        val_samples: int = 64,
        val_sample_steps: int = 50,
        optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW,
        lr_scheduler: Callable[..., Any] | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        data_info: dict[str, Any] | None = None,
    ):
        if not isinstance(denoiser, GraphTransformer):
            raise TypeError(f"denoiser must be a polydiff_molecules.nets.GraphTransformer, got {type(denoiser).__name__}")
        super().__init__(
            denoiser=denoiser, cond_dropout=cond_dropout, ema_decay=ema_decay, ema_start=ema_start,
            sample_steps=sample_steps, guidance=guidance, optimizer=optimizer, lr_scheduler=lr_scheduler,
            lr_scheduler_interval=lr_scheduler_interval,
        )
        if noise not in ("marginal", "joint"):
            raise ValueError(f"noise must be 'marginal' or 'joint', got {noise!r}")
        if edge_weight <= 0:
            raise ValueError(f"edge_weight must be positive, got {edge_weight}")
        if not 0.0 <= property_dropout < 1.0:
            raise ValueError(f"property_dropout must lie in [0, 1), got {property_dropout}")
        if val_samples < 0 or val_sample_steps < 1:
            raise ValueError("val_samples must be >= 0 and val_sample_steps >= 1")
        self.noise = noise
        self.edge_weight = float(edge_weight)
        self.property_dropout = float(property_dropout)
        self.val_samples, self.val_sample_steps = int(val_samples), int(val_sample_steps)
        self.data_info: dict[str, Any] | None = None
        if data_info is not None:
            self.configure_data(data_info)

    # --- the data description ------------------------------------------------------------------
    def configure_data(self, info: Mapping[str, Any]) -> None:
        """Take the data description: build the network's data-dependent layers and the schedules."""
        info = check_data_info(info)
        kinds = [0 if c["kind"] == "numeric" else len(c["categories"]) for c in info["conditions"]]
        self.denoiser.build(len(info["atom_types"]), kinds)
        self.rebuild_ema()
        self.data_info = info
        self.atom_schedule = MarginalTransitions(_normalised(info["atom_marginals"]))
        self.bond_schedule = MarginalTransitions(_normalised(info["bond_marginals"]))
        max_valence, atom_weight = atom_type_table(info["atom_types"])
        self.register_buffer("max_valence", max_valence, persistent=False)
        self.register_buffer("atom_weight", atom_weight, persistent=False)
        self.register_buffer("bond_given_atom", _rows(info["bond_given_atom"]), persistent=False)
        self.register_buffer("atom_given_bond", _rows(info["atom_given_bond"]), persistent=False)
        self.register_buffer("size_probs", torch.tensor(info["num_atoms"], dtype=torch.float64), persistent=False)
        self.register_buffer("atom_marginals", torch.tensor(_normalised(info["atom_marginals"])), persistent=False)

    def _require_info(self) -> dict[str, Any]:
        if self.data_info is None:
            raise RuntimeError("the model has no data description yet: train it on a MoleculeDataModule or load a checkpoint")
        return self.data_info

    @property
    def atom_types(self) -> list[str]:
        return list(self._require_info()["atom_types"])

    @property
    def condition_names(self) -> list[str]:
        return [c["name"] for c in self._require_info()["conditions"]]

    def setup(self, stage: str | None = None) -> None:
        info = self.datamodule_info()
        if info is None:
            return
        if self.data_info is None:
            self.configure_data(info)
            self.to(self.device)
        elif list(info["atom_types"]) != self.atom_types or [c["name"] for c in info["conditions"]] != self.condition_names:
            raise ValueError(
                f"the data's atom types {info['atom_types']} and conditions {[c['name'] for c in info['conditions']]} "
                f"differ from the model's {self.atom_types} and {self.condition_names}"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        info = self._require_info()
        checkpoint["molecules"] = info
        self.record_init_arg(checkpoint, "data_info", info)

    def wrapped(self, use_ema: bool = True) -> GraphDenoiser:
        """The core-contract denoiser around the EMA (or trained) network."""
        self._require_info()
        return GraphDenoiser(self.sampling_denoiser(use_ema), self.max_valence, self.atom_weight)

    # --- batches and noise ---------------------------------------------------------------------
    def unpack_batch(self, batch: Any) -> dict[str, Any]:
        """A PyG batch as dense ``atoms (B, N)``, ``bonds (B, N, N)``, ``node_mask`` and ``values (B, P)``."""
        from torch_geometric.utils import to_dense_adj, to_dense_batch

        atoms, node_mask = to_dense_batch(batch.x, batch.batch)
        n = atoms.shape[1]
        if batch.edge_index.numel():
            bonds = to_dense_adj(batch.edge_index, batch.batch, edge_attr=batch.edge_attr.float(), max_num_nodes=n)
            bonds = bonds.round().long()
        else:
            bonds = torch.zeros(atoms.shape[0], n, n, dtype=torch.long, device=atoms.device)
        values = getattr(batch, "y", None)
        if values is not None:
            values = values.reshape(atoms.shape[0], -1).float()
        return {"x0": atoms, "atoms": atoms, "bonds": _symmetrize(bonds, node_mask), "node_mask": node_mask,
                "values": values}

    def element_limits(self, atom_probs: Tensor, bond_probs: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
        """The joint noise's per-element limits given (distributions over) the clean graph.

        Atom ``i``: ``(m_X + Σ_j Σ_b p_ij(b) m_X|b) / (1 + Σ_j p_ij(b ≠ none))``; bond ``ij``:
        ``(m_E|x_i + m_E|x_j) / 2`` averaged over ``p_i`` and ``p_j``. One-hot inputs give the
        training-time limits; predicted probabilities their expectation.

        Shapes:
            atom_probs: (B, N, K); bond_probs: (B, N, N, 4); returns (B, N, K) and (B, N, N, 4).
        """
        pair = _pair_mask(node_mask).to(bond_probs.dtype)
        bonded = bond_probs[..., 1:] * pair[..., None]  # (B, N, N, 3)
        from_bonds = torch.einsum("bijc,ck->bik", bonded, self.atom_given_bond[1:].to(bond_probs.dtype))
        degree = bonded.sum((-1, -2))
        atom_limit = (self.atom_marginals.to(bond_probs.dtype) + from_bonds) / (1 + degree)[..., None]
        per_atom = atom_probs @ self.bond_given_atom.to(atom_probs.dtype)  # (B, N, 4)
        bond_limit = (per_atom[:, :, None, :] + per_atom[:, None, :, :]) / 2
        return atom_limit, bond_limit

    def corrupt(self, atoms: Tensor, bonds: Tensor, node_mask: Tensor, t: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw the noisy graph at times ``t`` (B,): symmetric, class 0 on padding and the diagonal."""
        atom_limit = bond_limit = None
        if self.noise == "joint":
            k = len(self.atom_types)
            atom_limit, bond_limit = self.element_limits(
                nn.functional.one_hot(atoms, k).double(), nn.functional.one_hot(bonds, NUM_BOND_TYPES).double(), node_mask
            )
        noisy_atoms = self.atom_schedule.corrupt(atoms, t, generator, limit=atom_limit) * node_mask
        noisy_bonds = _symmetrize(self.bond_schedule.corrupt(bonds, t, generator, limit=bond_limit), node_mask)
        return noisy_atoms, noisy_bonds

    # --- training ------------------------------------------------------------------------------
    def _dropped_values(self, values: Tensor | None, generator: torch.Generator | None) -> Tensor | None:
        if values is None or values.shape[1] == 0:
            return values
        rows = torch.rand(values.shape[0], 1, generator=generator, device=values.device) < self.cond_dropout
        single = torch.rand(values.shape, generator=generator, device=values.device) < self.property_dropout
        return values.masked_fill(rows | single, float("nan"))

    def compute_loss(self, parts: Mapping[str, Any], denoiser: nn.Module | None = None,
                     generator: torch.Generator | None = None, drop_cond: bool = True) -> Tensor:
        """Cross-entropy of the clean atoms plus ``edge_weight`` times that of the clean bonds."""
        loss, _, _ = self._losses(parts, denoiser, generator, drop_cond)
        return loss

    def _losses(self, parts: Mapping[str, Any], denoiser: nn.Module | None, generator: torch.Generator | None,
                drop_cond: bool) -> tuple[Tensor, Tensor, Tensor]:
        self._require_info()
        atoms, bonds, node_mask = parts["atoms"], parts["bonds"], parts["node_mask"]
        b = atoms.shape[0]
        t = torch.rand(b, generator=generator, device=atoms.device)
        noisy_atoms, noisy_bonds = self.corrupt(atoms, bonds, node_mask, t, generator)
        values = parts.get("values")
        if drop_cond:
            values = self._dropped_values(values, generator)
        net = self.denoiser if denoiser is None else denoiser
        wrapper = GraphDenoiser(net, self.max_valence, self.atom_weight)
        atom_logits, bond_logits = wrapper.logits(noisy_atoms, noisy_bonds, t, {"node_mask": node_mask, "values": values})
        atom_loss = categorical_loss(atom_logits, atoms, node_mask)
        upper = torch.triu(_pair_mask(node_mask), diagonal=1)
        bond_loss = categorical_loss(bond_logits, bonds, upper)
        return atom_loss + self.edge_weight * bond_loss, atom_loss, bond_loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        parts = self.unpack_batch(batch)
        loss, atom_loss, bond_loss = self._losses(parts, None, None, True)
        n = parts["atoms"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/atom_ce", atom_loss, batch_size=n)
        self.log("train/bond_ce", bond_loss, batch_size=n)
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        parts = self.unpack_batch(batch)
        n = parts["atoms"].shape[0]
        generator = self._val_generator(batch_idx, dataloader_idx, parts["atoms"].device)
        loss, atom_loss, bond_loss = self._losses(parts, self.sampling_denoiser(), generator, False)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/atom_ce", atom_loss, sync_dist=True, batch_size=n)
        self.log("val/bond_ce", bond_loss, sync_dist=True, batch_size=n)
        if batch_idx == 0 and self.val_samples > 0:
            from polydiff_molecules.chem import sanitize

            mols = self.generate(self.val_samples, steps=self.val_sample_steps, generator=generator)
            clean = [sanitize(m)[0] for m in mols]
            valid = [m for m in clean if m is not None]
            from rdkit import Chem

            smiles = {Chem.MolToSmiles(m, isomericSmiles=False) for m in valid}
            connected = sum(len(Chem.GetMolFrags(m)) == 1 for m in mols)
            self.log("val/validity", len(valid) / len(mols), sync_dist=True, batch_size=len(mols))
            self.log("val/uniqueness", len(smiles) / max(len(valid), 1), sync_dist=True, batch_size=len(mols))
            self.log("val/connected", connected / len(mols), sync_dist=True, batch_size=len(mols))

    # --- conditions ----------------------------------------------------------------------------
    def encode_conditions(self, conditions: Mapping[str, Any] | None) -> tuple[Tensor | None, list[str]]:
        """Requested property values as the network's ``(P,)`` input (NaN for those not given).

        Numbers are standardised with the training statistics; categories are looked up by
        name. A value outside the training range is kept, with a warning that says how far out
        it lies (in training standard deviations).

        Returns:
            The values (``None`` when the model has no conditions and none are given) and the
            warnings.

        Raises:
            KeyError: a property the model was not trained on, naming the trained ones.
            ValueError: a category the training data did not have, or a non-numeric value for a
                numerical property.
        """
        specs = self._require_info()["conditions"]
        conditions = dict(conditions or {})
        names = [c["name"] for c in specs]
        unknown = [k for k in conditions if k not in names]
        if unknown:
            trained = ", ".join(names) if names else "none (the model is unconditional)"
            raise KeyError(f"the model was not trained on the condition(s) {unknown}; trained conditions: {trained}")
        if not specs:
            return None, []
        values = torch.full((len(specs),), float("nan"))
        notes = []
        for i, spec in enumerate(specs):
            if spec["name"] not in conditions:
                continue
            raw = conditions[spec["name"]]
            if spec["kind"] == "categorical":
                from polydiff_molecules.data import _category

                categories = [str(c) for c in spec["categories"]]
                raw = _category(raw)  # labelled as the data module labels them: 2.0 is "2"
                if raw not in categories:
                    raise ValueError(f"condition {spec['name']}={raw!r} is not one of the training categories {categories}")
                values[i] = float(categories.index(raw))
                continue
            try:
                number = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"condition {spec['name']} must be a number, got {raw!r}") from None
            if not math.isfinite(number):
                raise ValueError(f"condition {spec['name']} must be finite, got {raw!r}")
            low, high, std = float(spec["min"]), float(spec["max"]), float(spec["std"]) or 1.0
            if number < low or number > high:
                side, edge = ("below the training minimum", low) if number < low else ("above the training maximum", high)
                notes.append(
                    f"condition {spec['name']}={number:g} is {abs(number - edge):.3g} {side} {edge:g} "
                    f"({abs(number - edge) / std:.2f} training standard deviations); the model extrapolates"
                )
            values[i] = (number - float(spec["mean"])) / std
        return values, notes

    # --- sampling ------------------------------------------------------------------------------
    def sample_sizes(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """Numbers of atoms drawn from the training distribution. Shapes: returns (count,) long."""
        probs = self.size_probs.double().cpu()
        return torch.multinomial(probs, count, replacement=True, generator=_cpu(generator))

    @torch.no_grad()
    def sample_graphs(
        self, count: int, *, num_atoms: int | Sequence[int] | Tensor | None = None, conditions: Tensor | None = None,
        guidance: float | None = None, steps: int | None = None, generator: torch.Generator | None = None,
        use_ema: bool = True,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Sample ``count`` graphs in one batch.

        Args:
            count: number of graphs.
            num_atoms: atoms per graph (one number for all, or one per graph); drawn from the
                training distribution when None.
            conditions: encoded conditions ``(P,)`` or ``(count, P)`` (see :meth:`encode_conditions`).
            guidance: classifier-free guidance scale (default: the module's).
            steps: sampling steps (default: ``sample_steps``).
            generator: the only source of randomness.

        Returns:
            ``atoms (count, N)``, ``bonds (count, N, N)`` and ``node_mask (count, N)``.
        """
        self._require_info()
        if count < 1:
            raise ValueError(f"count must be positive, got {count}")
        device = self.device
        if num_atoms is None:
            sizes = self.sample_sizes(count, generator)
        else:
            sizes = torch.as_tensor(num_atoms, dtype=torch.long).reshape(-1).cpu()
            sizes = sizes.expand(count) if sizes.numel() == 1 else sizes
            if sizes.numel() != count or int(sizes.min()) < 1:
                raise ValueError(f"num_atoms must be positive, one number or one per graph; got {num_atoms!r}")
        sizes = sizes.to(device)
        n = int(sizes.max())
        node_mask = torch.arange(n, device=device)[None] < sizes[:, None]
        gen = generator if generator is None or generator.device == torch.device(device) else None
        atoms = self.atom_schedule.prior_sample((count, n), generator=gen, device=device) * node_mask
        bonds = _symmetrize(self.bond_schedule.prior_sample((count, n, n), generator=gen, device=device), node_mask)
        values = None
        if conditions is not None:
            values = conditions.to(device=device, dtype=torch.float32)
            values = values.expand(count, -1) if values.ndim == 1 else values
        cond = {"node_mask": node_mask, "values": values}
        steps = self.sample_steps if steps is None else int(steps)
        grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)

        def constrain(state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            return state[0] * node_mask, _symmetrize(state[1], node_mask)

        def joint_limits(state: Any, probs: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            return self.element_limits(probs[0].double(), probs[1].double(), node_mask)

        was_training = self.training
        self.eval()
        try:
            atoms, bonds = sample_categorical(
                self.wrapped(use_ema), (self.atom_schedule, self.bond_schedule), (atoms, bonds), grid,
                cond=cond if values is not None else {"node_mask": node_mask, "values": None},
                # without a condition there is nothing to guide toward (and no second pass to pay)
                guidance=1.0 if values is None else self.guidance if guidance is None else float(guidance),
                generator=gen, constrain=constrain, limits=joint_limits if self.noise == "joint" else None,
            )
        finally:
            self.train(was_training)
        return atoms, bonds, node_mask

    def to_molecules(self, atoms: Tensor, bonds: Tensor, node_mask: Tensor) -> list[Any]:
        """RDKit molecules (unsanitised ``RWMol``) from sampled graphs."""
        from polydiff_molecules.chem import graph_to_mol

        tokens = self.atom_types
        mols = []
        for a, e, m in zip(atoms.cpu(), bonds.cpu(), node_mask.cpu()):
            n = int(m.sum())
            mols.append(graph_to_mol([tokens[i] for i in a[:n].tolist()], e[:n, :n].numpy()))
        return mols

    def generate(
        self, count: int, *, num_atoms: int | None = None, conditions: Mapping[str, Any] | Tensor | None = None,
        guidance: float | None = None, steps: int | None = None, batch_size: int = 256,
        generator: torch.Generator | None = None, progress: Callable[[int, int], None] | None = None,
    ) -> list[Any]:
        """Generate ``count`` molecules (unsanitised RDKit ``RWMol``; sanitise to check validity).

        Args:
            conditions: property values by name (``{"qed": 0.8, "logp": 2.5}``), or already
                encoded; properties not given are left free. Out-of-range values warn.
            batch_size: graphs sampled together.
            progress: called with (done, count) after each batch.
        """
        if isinstance(conditions, Mapping) or conditions is None:
            encoded, notes = self.encode_conditions(conditions)
            for note in notes:
                warnings.warn(note, stacklevel=2)
        else:
            encoded = conditions
        mols: list[Any] = []
        while len(mols) < count:
            size = min(batch_size, count - len(mols))
            graphs = self.sample_graphs(size, num_atoms=num_atoms, conditions=encoded, guidance=guidance, steps=steps,
                                        generator=generator)
            mols.extend(self.to_molecules(*graphs))
            if progress is not None:
                progress(len(mols), count)
        return mols


def _normalised(values: Sequence[float]) -> list[float]:
    total = float(sum(values))
    if total <= 0:
        raise ValueError("a marginal distribution in data_info sums to zero")
    return [float(v) / total for v in values]


def _rows(rows: Sequence[Sequence[float]]) -> Tensor:
    table = torch.tensor(rows, dtype=torch.float64)
    total = table.sum(-1, keepdim=True)
    return torch.where(total > 0, table / torch.where(total > 0, total, 1.0), torch.full_like(table, 1.0 / table.shape[-1]))


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    return generator if generator is None or generator.device.type == "cpu" else None
