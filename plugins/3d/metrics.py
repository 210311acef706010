"""Point-cloud generation metrics: Chamfer distance, EMD, and the set metrics MMD, COV and 1-NNA.

Protocol (after PointFlow, Yang et al. 2019, as PVD and LION report it): generated and reference
clouds have the same number of points and the same normalisation; the distance between two
clouds is

* ``chamfer``: the mean over the first cloud of the squared distance to the nearest point of the
  second plus the same the other way round (squared Euclidean, as PointFlow's ``CD``);
* ``emd``: the mean Euclidean distance of the optimal one-to-one matching (earth mover's
  distance for equal-size clouds, solved exactly by linear assignment).

With the pairwise distances ``D_gr`` (generated x reference), ``D_gg`` and ``D_rr``:

* ``mmd``: the mean over reference clouds of the distance to the nearest generated cloud
  (minimum matching distance: fidelity);
* ``cov``: the fraction of reference clouds that are the nearest reference of some generated
  cloud (coverage: diversity);
* ``1-nna``: the leave-one-out accuracy of the 1-nearest-neighbour classifier that tells
  generated from reference clouds in the union (50 % is ideal; 100 % means every cloud's nearest
  neighbour comes from its own set).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["chamfer_distance", "emd", "pairwise_distances", "set_metrics"]


def _cloud(points, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(points) if not isinstance(points, torch.Tensor) else points).double()
    if t.ndim != 2 or t.shape[1] != 3 or len(t) == 0:
        raise ValueError(f"{name} must have shape (N >= 1, 3); got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def chamfer_distance(a, b) -> float:
    """PointFlow's Chamfer distance of two clouds (module docstring). Shapes: (N, 3), (M, 3)."""
    a, b = _cloud(a, "a"), _cloud(b, "b")
    d = torch.cdist(a, b).square()
    return float(d.min(dim=1).values.mean() + d.min(dim=0).values.mean())


def emd(a, b) -> float:
    """Earth mover's distance of two clouds of equal size, exact (module docstring)."""
    from scipy.optimize import linear_sum_assignment

    a, b = _cloud(a, "a"), _cloud(b, "b")
    if len(a) != len(b):
        raise ValueError(f"EMD needs clouds of equal size; got {len(a)} and {len(b)} points")
    cost = torch.cdist(a, b).numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def pairwise_distances(first, second, metric: str = "chamfer") -> np.ndarray:
    """Distances between every cloud of ``first`` and every cloud of ``second``: (len(first), len(second))."""
    if metric not in ("chamfer", "emd"):
        raise ValueError(f"unknown metric {metric!r}; valid: chamfer, emd")
    fn = chamfer_distance if metric == "chamfer" else emd
    return np.array([[fn(a, b) for b in second] for a in first], dtype=np.float64)


def set_metrics(generated, reference, metric: str = "chamfer") -> dict[str, float]:
    """MMD, COV and 1-NNA of a generated set against a reference set (module docstring).

    Args:
        generated, reference: sequences of (N, 3) clouds (at least two in each set).
        metric: ``chamfer`` or ``emd``.

    Returns:
        ``{"mmd", "cov", "1-nna"}``.
    """
    generated, reference = list(generated), list(reference)
    if len(generated) < 2 or len(reference) < 2:
        raise ValueError(f"need at least two generated and two reference clouds; got {len(generated)} and "
                         f"{len(reference)}")
    d_gr = pairwise_distances(generated, reference, metric)
    d_gg = pairwise_distances(generated, generated, metric)
    d_rr = pairwise_distances(reference, reference, metric)
    mmd = float(d_gr.min(axis=0).mean())
    cov = float(len(set(d_gr.argmin(axis=1).tolist())) / len(reference))
    n_g, n_r = len(generated), len(reference)
    full = np.block([[d_gg, d_gr], [d_gr.T, d_rr]])
    np.fill_diagonal(full, np.inf)
    labels = np.r_[np.zeros(n_g, dtype=bool), np.ones(n_r, dtype=bool)]
    nearest = full.argmin(axis=1)
    accuracy = float((labels[nearest] == labels).mean())
    return {"mmd": mmd, "cov": cov, "1-nna": accuracy}
