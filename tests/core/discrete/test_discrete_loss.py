"""The categorical cross-entropy, computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.discrete import categorical_loss

PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5], [0.1, 0.8, 0.1]])
X0 = torch.tensor([0, 2, 1])


def test_mean_negative_log_likelihood():
    expected = -(math.log(0.7) + math.log(0.5) + math.log(0.8)) / 3
    assert categorical_loss(PROBS.log(), X0).item() == pytest.approx(expected, rel=1e-6)


def test_logits_and_log_probabilities_agree():
    logits = PROBS.log() + torch.tensor([[3.0], [-1.0], [10.0]])  # a shift per row is not normalised
    torch.testing.assert_close(categorical_loss(logits, X0), categorical_loss(PROBS.log(), X0))


def test_mask_excludes_elements_even_with_infinite_log_probabilities():
    log_probs = PROBS.log().clone()
    log_probs[1] = torch.tensor([0.0, float("-inf"), float("-inf")])  # x0 = 2 impossible: a padding row
    loss = categorical_loss(log_probs, X0, mask=torch.tensor([True, False, True]))
    assert loss.item() == pytest.approx(-(math.log(0.7) + math.log(0.8)) / 2, rel=1e-6)
    weighted = categorical_loss(PROBS.log(), X0, mask=torch.tensor([1.0, 0.0, 3.0]))
    assert weighted.item() == pytest.approx(-(math.log(0.7) + 3 * math.log(0.8)) / 4, rel=1e-6)
    assert categorical_loss(PROBS.log(), X0, mask=torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_mask_broadcasts_and_gradients_flow():
    logits = torch.randn(2, 4, 4, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    x0 = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    node_mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    edge_mask = node_mask[:, :, None] & node_mask[:, None, :]
    loss = categorical_loss(logits, x0, mask=edge_mask)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[~edge_mask] == 0).all()
    sample_mask = torch.tensor([True, False])[:, None, None]  # broadcast over (N, N)
    full = categorical_loss(logits[:1], x0[:1])
    torch.testing.assert_close(categorical_loss(logits, x0, mask=sample_mask), full)


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"expected \(\*x0.shape, K\)"):
        categorical_loss(PROBS.log(), X0[:2])
