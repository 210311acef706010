"""The NCSN++-style spectrogram networks: shapes, conditioning, training signal, sampling."""

from __future__ import annotations

import pytest
import torch

from polydiff.parameterization import convert, from_x0_eps
from polydiff.samplers import sample
from polydiff.schedules import OUVEBridge
from polydiff_audio.nets import SpectrogramPredictor, SpectrogramScoreNet
from polydiff_audio.stft import complex_to_channels

TINY = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1)


def _spec(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed))


def _trained_like(net: torch.nn.Module) -> torch.nn.Module:
    """The network with a random output layer, as after some training (it starts at zero)."""
    head = net.backbone.head[-1]
    torch.nn.init.normal_(head.weight, std=0.1)
    torch.nn.init.normal_(head.bias, std=0.1)
    return net


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_parameter_count():
    """The default SpectrogramScoreNet has 1,632,706 parameters; SpectrogramPredictor 1,400,898."""
    assert _n_params(SpectrogramScoreNet()) == 1_632_706
    assert _n_params(SpectrogramPredictor()) == 1_400_898


@pytest.mark.parametrize("frames", [1, 7, 33])
def test_default_net_keeps_shape_for_any_frame_count(frames):
    torch.manual_seed(0)
    net = SpectrogramScoreNet()
    x, y = _spec(1, 1, 256, frames), _spec(1, 1, 256, frames, seed=1)
    with torch.no_grad():
        out = net(x, torch.tensor([0.5]), y)
    assert out.shape == x.shape and out.dtype == torch.complex64
    assert bool(torch.isfinite(out).all())


def test_real_layout_gives_the_same_numbers():
    torch.manual_seed(0)
    net = SpectrogramScoreNet(**TINY)
    x, y, t = _spec(2, 1, 12, 9), _spec(2, 1, 12, 9, seed=1), torch.tensor([0.2, 0.7])
    with torch.no_grad():
        as_complex = net(x, t, y)
        as_real = net(complex_to_channels(x), t, complex_to_channels(y))
    assert as_real.shape == (2, 2, 12, 9) and not as_real.is_complex()
    torch.testing.assert_close(as_real, complex_to_channels(as_complex))


def test_time_conditioning_is_per_sample():
    torch.manual_seed(0)
    net = _trained_like(SpectrogramScoreNet(**TINY))
    x, y = _spec(1, 1, 8, 8).expand(3, 1, 8, 8), _spec(1, 1, 8, 8, seed=1).expand(3, 1, 8, 8)
    with torch.no_grad():
        out = net(x, torch.tensor([0.1, 0.1, 0.9]), y)
    torch.testing.assert_close(out[0], out[1])
    assert float((out[0] - out[2]).abs().max()) > 1e-4
    # Samplers hand times over in the state's dtype (complex here); the real part is the time.
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.tensor([0.1, 0.1, 0.9], dtype=torch.complex64), y), out)


def test_untrained_networks_predict_zero_and_the_residual_predictor_passes_the_input():
    torch.manual_seed(0)
    x, y = _spec(2, 1, 8, 6), _spec(2, 1, 8, 6, seed=1)
    with torch.no_grad():
        assert torch.equal(SpectrogramScoreNet(**TINY)(x, torch.tensor([0.3, 0.8]), y), torch.zeros_like(x))
        assert torch.equal(SpectrogramPredictor(**TINY)(y), torch.zeros_like(y))
        assert torch.equal(SpectrogramPredictor(**TINY, residual=True)(y), y)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = _trained_like(SpectrogramScoreNet(**TINY))
    out = net(_spec(2, 1, 8, 6), torch.tensor([0.3, 0.8]), _spec(2, 1, 8, 6, seed=1))
    out.abs().square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().max()) > 0, name


def test_predictor_has_no_time_input():
    torch.manual_seed(0)
    net = SpectrogramPredictor(**TINY)
    y = _spec(2, 1, 13, 5)
    with torch.no_grad():
        out = net(y)
    assert out.shape == y.shape and out.dtype == torch.complex64
    assert net.backbone.embed is None


def test_score_conversion_on_complex_tensors_is_sgmse_loss():
    """SGMSE+'s |sigma score + z|^2 is the eps-space error of a score network, also for complex z."""
    schedule = OUVEBridge()
    x0, y, z = _spec(2, 1, 4, 4), _spec(2, 1, 4, 4, seed=1), _spec(2, 1, 4, 4, seed=2)
    t = torch.tensor([0.1, 0.6])
    x_t = schedule.corrupt(x0, t, z, y)
    score = _spec(2, 1, 4, 4, seed=3)
    sigma = schedule.sigma(t).float().reshape(2, 1, 1, 1)
    eps_pred = convert(score, "score", "eps", x_t, t, schedule, y)
    target = from_x0_eps(x0, z, "eps", x_t, t, schedule, y)
    torch.testing.assert_close((eps_pred - target).abs(), (sigma * score + z).abs())
    torch.testing.assert_close(convert(eps_pred, "eps", "score", x_t, t, schedule, y), score)
    # The true score of the forward marginal: -z / sigma.
    torch.testing.assert_close(from_x0_eps(x0, z, "score", x_t, t, schedule, y), -z / sigma)


def test_overfits_one_tiny_batch():
    torch.manual_seed(0)
    net = SpectrogramScoreNet(**TINY)
    schedule = OUVEBridge()
    x0, y, z = _spec(2, 1, 8, 8), _spec(2, 1, 8, 8, seed=1), _spec(2, 1, 8, 8, seed=2)
    t = torch.tensor([0.3, 0.7])
    x_t = schedule.corrupt(x0, t, z, y)
    sigma = schedule.sigma(t).float().reshape(2, 1, 1, 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = (sigma * net(x_t, t, y) + z).abs().square().mean()  # SGMSE+'s score loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_pc_sampling_runs_end_to_end_on_complex_spectrograms():
    torch.manual_seed(0)
    net = SpectrogramScoreNet(**TINY).eval()
    schedule = OUVEBridge()
    y = _spec(2, 1, 16, 11)
    with torch.no_grad():
        out = sample(net, schedule, schedule.prior(y.shape, y=y), sampler="pc", steps=3, cond=y, y=y)
        assert out.shape == y.shape and out.dtype == torch.complex64 and bool(torch.isfinite(out).all())
        # SGMSE+'s prior: complex noise, variance split between real and imaginary parts.
        start = schedule.prior(y.shape, y=y, dtype=y.dtype, generator=torch.Generator().manual_seed(0))
        out = sample(net, schedule, start, sampler="pc", steps=3, cond=y, y=y, predictor="euler_maruyama")
        assert out.shape == y.shape and out.dtype == torch.complex64 and bool(torch.isfinite(out).all())


def test_bad_inputs_are_reported():
    net = SpectrogramScoreNet(**TINY)
    x = _spec(1, 1, 8, 8)
    with pytest.raises(ValueError, match="pass it as cond"):
        net(x, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="same layout"):
        net(x, torch.tensor([0.5]), complex_to_channels(x))
    with pytest.raises(ValueError, match="one time per sample"):
        net(x, torch.rand(3), x)
    with pytest.raises(ValueError, match="attention_levels"):
        SpectrogramScoreNet(channel_mult=(1, 2), attention_levels=(2,))
