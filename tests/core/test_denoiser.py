"""The denoiser contract, condition dropping and EDM preconditioning (Karras et al. 2022, Table 1)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from polydiff.denoiser import Denoiser, EDMPrecond, drop_condition, prediction_of
from polydiff.parameterization import PREDICTIONS
from polydiff.schedules import EDM, OUVEBridge, RectifiedFlow, VPCosine, VPLinear

# --- prediction_of --------------------------------------------------------------------------


def test_prediction_of_reads_the_declared_prediction():
    for kind in PREDICTIONS:
        assert prediction_of(Denoiser(kind)) == kind


def test_prediction_of_a_module_without_prediction_says_what_to_add():
    with pytest.raises(TypeError) as info:
        prediction_of(nn.Linear(2, 2))
    message = str(info.value)
    assert "Linear" in message and "prediction" in message
    for kind in PREDICTIONS:
        assert kind in message


def test_prediction_of_a_bad_prediction_lists_the_valid_ones():
    net = nn.Identity()
    net.prediction = "velocity"
    with pytest.raises(ValueError) as info:
        prediction_of(net)
    assert "velocity" in str(info.value)
    for kind in PREDICTIONS:
        assert kind in str(info.value)


def test_denoiser_validates_its_prediction_at_construction():
    with pytest.raises(ValueError, match="velocity"):
        Denoiser("velocity")


# --- drop_condition -------------------------------------------------------------------------

MASK = torch.tensor([True, False, True, False])


def test_drop_condition_zeroes_masked_rows_of_a_tensor():
    cond = torch.arange(1.0, 25.0).reshape(4, 3, 2)
    before = cond.clone()
    out = drop_condition(cond, MASK)
    assert torch.equal(cond, before)  # never in place
    assert (out[0] == 0).all() and (out[2] == 0).all()
    assert torch.equal(out[1], cond[1]) and torch.equal(out[3], cond[3])
    assert out.shape == cond.shape and out.dtype == cond.dtype


def test_drop_condition_handles_integer_and_one_dimensional_tensors():
    labels = torch.tensor([3, 1, 4, 1])
    assert drop_condition(labels, MASK).tolist() == [0, 1, 0, 1]
    assert labels.tolist() == [3, 1, 4, 1]


def test_drop_condition_recurses_into_dicts_lists_and_tuples_without_mutating():
    text, image = torch.ones(4, 5), torch.full((4, 2, 2), 2.0)
    cond = {"text": text, "parts": (image, [text]), "none": None}
    out = drop_condition(cond, MASK)
    assert set(out) == {"text", "parts", "none"} and out["none"] is None
    assert isinstance(out["parts"], tuple) and isinstance(out["parts"][1], list)
    expected_rows = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert torch.equal(out["text"][:, 0], expected_rows)
    assert torch.equal(out["parts"][0][:, 0, 0], 2 * expected_rows)
    assert torch.equal(out["parts"][1][0][:, 0], expected_rows)
    # the input is untouched, containers included
    assert (text == 1).all() and (image == 2).all()
    assert cond["parts"][0] is image and cond["parts"][1][0] is text
    assert out is not cond and out["parts"][1] is not cond["parts"][1]


def test_drop_condition_of_none_is_none_and_unknown_types_raise():
    assert drop_condition(None, MASK) is None
    with pytest.raises(TypeError, match="str"):
        drop_condition("a caption", MASK)


def test_denoiser_drop_cond_uses_drop_condition():
    out = Denoiser().drop_cond(torch.ones(4, 2), MASK)
    assert out[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]


# --- EDMPrecond -----------------------------------------------------------------------------


class Recorder(nn.Module):
    """A raw network that remembers its inputs and returns ``fn(input, c_noise)``."""

    def __init__(self, fn=None):
        super().__init__()
        self.fn = fn or (lambda x, c: torch.zeros_like(x))
        self.inputs = []

    def forward(self, x, c_noise, cond=None):
        self.inputs.append((x, c_noise, cond))
        return self.fn(x, c_noise)


def test_edm_precond_coefficients_by_hand_at_sigma_one():
    # sigma = 1, sigma_data = 0.5: c_skip = 0.25/1.25, c_out = 0.5/sqrt(1.25), c_in = 1/sqrt(1.25), c_noise = 0
    c_skip, c_out, c_in = 0.2, math.sqrt(0.2), math.sqrt(0.8)
    net = Recorder(lambda x, c: 3.0 * x + 1.0)
    model = EDMPrecond(net, EDM(), sigma_data=0.5)
    x = torch.randn(3, 4, dtype=torch.float64)
    t = torch.full((3,), 1 / 80, dtype=torch.float64)
    out = model(x, t, "cond")
    seen_x, seen_c_noise, seen_cond = net.inputs[-1]
    torch.testing.assert_close(seen_x, c_in * x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(seen_c_noise, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert seen_cond == "cond"
    torch.testing.assert_close(out, c_skip * x + c_out * (3.0 * c_in * x + 1.0), rtol=1e-12, atol=1e-12)


def test_edm_precond_coefficients_by_hand_at_sigma_two_and_unit_sigma_data():
    # sigma = 2, sigma_data = 1: c_skip = 1/5, c_out = 2/sqrt(5), c_in = 1/sqrt(5), c_noise = ln(2)/4
    net = Recorder(lambda x, c: torch.ones_like(x))
    model = EDMPrecond(net, EDM(), sigma_data=1.0)
    x = torch.randn(2, 3, dtype=torch.float64)
    out = model(x, torch.full((2,), 2 / 80, dtype=torch.float64))
    torch.testing.assert_close(net.inputs[-1][0], x / math.sqrt(5), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(net.inputs[-1][1], torch.full((2,), math.log(2) / 4, dtype=torch.float64))
    torch.testing.assert_close(out, x / 5 + 2 / math.sqrt(5), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "make", [EDM, VPLinear, VPCosine, RectifiedFlow], ids=["edm", "vp-linear", "vp-cosine", "flow"]
)
def test_edm_precond_with_a_zero_network_returns_c_skip_x_over_alpha(make):
    schedule = make()
    model = EDMPrecond(Recorder(), schedule, sigma_data=0.5)
    x = torch.randn(4, 3, 2, dtype=torch.float64)
    t = torch.tensor([0.01, 0.2, 0.5, 0.8], dtype=torch.float64)
    a, s = schedule.alpha(t)[:, None, None], schedule.sigma(t)[:, None, None]
    sigma_ve = s / a
    torch.testing.assert_close(model(x, t), 0.25 / (sigma_ve**2 + 0.25) * x / a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", [VPLinear, VPCosine, RectifiedFlow], ids=["vp-linear", "vp-cosine", "flow"])
def test_edm_precond_on_any_schedule_is_edm_in_ve_coordinates(make):
    """D_schedule(x, t) = D_EDM(x / alpha, sigma / alpha) with the same raw network."""
    schedule = make()
    fn = lambda x, c: torch.tanh(x) * (1 + c[:, None]) - 0.3 * c[:, None]  # noqa: E731
    model, reference = EDMPrecond(Recorder(fn), schedule), EDMPrecond(Recorder(fn), EDM())
    x = torch.randn(4, 5, dtype=torch.float64)
    t = torch.tensor([0.01, 0.2, 0.5, 0.8], dtype=torch.float64)
    a, s = schedule.alpha(t), schedule.sigma(t)
    t_edm = (s / a) / 80.0  # EDM's sigma(t) = 80 t
    torch.testing.assert_close(model(x, t), reference(x / a[:, None], t_edm), rtol=1e-12, atol=1e-12)
    # and term by term, from Table 1 applied to x / alpha and sigma / alpha
    sig = (s / a)[:, None]
    c_in = 1 / torch.sqrt(sig**2 + 0.25)
    c_noise = torch.log(s / a) / 4
    seen_x, seen_c_noise, _ = model.net.inputs[-1]
    torch.testing.assert_close(seen_x, c_in * x / a[:, None], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(seen_c_noise, c_noise, rtol=1e-12, atol=1e-12)
    c_skip, c_out = 0.25 / (sig**2 + 0.25), sig * 0.5 / torch.sqrt(sig**2 + 0.25)
    expected = c_skip * x / a[:, None] + c_out * fn(seen_x, c_noise)
    torch.testing.assert_close(model(x, t), expected, rtol=1e-12, atol=1e-12)


def test_edm_precond_accepts_per_element_times_and_keeps_float32():
    schedule = VPCosine()
    model = EDMPrecond(Recorder(lambda x, c: x * c[..., None]), schedule)
    x = torch.randn(2, 3, 4)
    t = torch.rand(2, 3) * 0.8 + 0.1
    out = model(x, t)
    assert out.shape == (2, 3, 4) and out.dtype == torch.float32
    assert model.net.inputs[-1][1].shape == (2, 3)
    for b in range(2):
        for f in range(3):
            single = model(x[b : b + 1, f], t[b, f].reshape(1))
            torch.testing.assert_close(out[b, f], single[0], rtol=1e-5, atol=1e-6)


def test_edm_precond_predicts_x0_and_rejects_a_bridge():
    assert EDMPrecond(Recorder(), EDM()).prediction == "x0"
    assert prediction_of(EDMPrecond(Recorder(), VPLinear())) == "x0"
    with pytest.raises(ValueError, match="bridge"):
        EDMPrecond(Recorder(), OUVEBridge())


def test_edm_precond_is_a_module_holding_the_network():
    net = nn.Linear(3, 3)
    wrapped = EDMPrecond(net, EDM())
    assert isinstance(wrapped, nn.Module)
    assert list(wrapped.parameters()) == list(net.parameters())
