"""The space–time transformer and its heads: shapes, the known-entry flag, missing inputs,
the zero-initialised output layer and the size limit."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from polydiff_timeseries.nets import DYffusionNets, ForecastDenoiser, FrameNet, SpaceTimeTransformer  # noqa: E402

TINY = dict(max_nodes=64, channels=8, layers=1, heads=2)


def _randomise_heads(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every zero-initialised output layer random weights, so outputs depend on inputs."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, SpaceTimeTransformer):
            with torch.no_grad():
                m.head.weight.copy_(torch.randn(m.head.weight.shape, generator=gen))
                m.head.bias.copy_(torch.randn(m.head.bias.shape, generator=gen))
    return module.eval()


@pytest.mark.parametrize("level_shape", [None, (2,), (2, 5), (2, 5, 3)])
def test_backbone_shapes_for_every_level_shape(level_shape):
    torch.manual_seed(0)
    net = SpaceTimeTransformer(in_features=2, out_features=3, **TINY)
    feats = torch.randn(2, 5, 3, 2)
    level = None if level_shape is None else torch.rand(level_shape)
    out = net(feats, torch.arange(5.0), level)
    assert out.shape == (2, 5, 3, 3)
    out = net(feats, torch.arange(10.0).view(2, 5), level)  # per-sample frame positions
    assert out.shape == (2, 5, 3, 3)


def test_zero_initialised_heads_output_exactly_zero():
    torch.manual_seed(0)
    den = ForecastDenoiser(**TINY)
    out = den(torch.randn(2, 6, 5), torch.rand(2))
    assert torch.equal(out, torch.zeros(2, 6, 5))
    frame = FrameNet(**TINY)
    out = frame(torch.randn(2, 3, 5), torch.arange(3.0), torch.tensor([3.0, 4.0]))
    assert torch.equal(out, torch.zeros(2, 2, 5))


def test_max_nodes_and_heads_are_checked():
    net = ForecastDenoiser(max_nodes=4, channels=8, layers=1, heads=2)
    with pytest.raises(ValueError, match="5 series.*max_nodes=4"):
        net(torch.randn(1, 3, 5), torch.rand(1))
    assert net(torch.randn(1, 3, 4), torch.rand(1)).shape == (1, 3, 4)  # exactly at the limit
    with pytest.raises(ValueError, match="divisible by heads"):
        SpaceTimeTransformer(max_nodes=4, channels=6, layers=1, heads=4)
    with pytest.raises(ValueError, match="unknown prediction"):
        ForecastDenoiser(prediction="score")


@pytest.mark.parametrize("t_shape", [(2,), (2, 6), (2, 6, 5)])
def test_forecast_denoiser_flags_entries_at_time_zero_as_known(t_shape):
    torch.manual_seed(0)
    den = _randomise_heads(ForecastDenoiser(**TINY))
    seen = {}
    den.net.inp.register_forward_hook(lambda mod, args, out: seen.update(feats=args[0]))
    x = torch.randn(2, 6, 5)
    t = torch.rand(t_shape) + 0.1
    if len(t_shape) == 1:
        t[1] = 0.0  # the whole second window known
    else:
        t[0, :2] = 0.0  # the first two frames of the first window known
    out = den(x, t)
    assert out.shape == (2, 6, 5) and torch.isfinite(out).all()
    feats = seen["feats"]
    assert torch.equal(feats[..., 0], x)
    full_t = t.reshape(*t.shape, *([1] * (3 - t.ndim))).expand(2, 6, 5)
    assert torch.equal(feats[..., 1], (full_t == 0).float())


def test_forecast_denoiser_depends_on_per_element_time():
    torch.manual_seed(0)
    den = _randomise_heads(ForecastDenoiser(**TINY))
    x = torch.randn(1, 6, 4)
    t = torch.full((1, 6, 4), 0.5)
    base = den(x, t)
    t2 = t.clone()
    t2[0, 3, 2] = 0.9  # one element noisier
    assert not torch.allclose(den(x, t2), base)
    t3 = t.clone()
    t3[0, 3, 2] = 0.0  # one element known: a different input feature, a different output
    assert not torch.allclose(den(x, t3), base)
    # one time per sample is the same as that time everywhere
    torch.testing.assert_close(den(x, torch.tensor([0.5])), base)


def test_windows_of_a_batch_do_not_interact():
    torch.manual_seed(0)
    den = _randomise_heads(ForecastDenoiser(**TINY))
    x, t = torch.randn(3, 6, 4), torch.rand(3, 6)
    together = den(x, t)
    torch.testing.assert_close(den(x[1:2], t[1:2]), together[1:2], rtol=1e-5, atol=1e-5)


def test_frame_net_queries_and_missing_inputs():
    torch.manual_seed(0)
    net = _randomise_heads(FrameNet(**TINY))
    frames = torch.randn(2, 4, 5)
    positions = torch.arange(-3.0, 1.0)
    queries = torch.tensor([1.0, 2.0, 3.0])
    out = net(frames, positions, queries)
    assert out.shape == (2, 3, 5) and torch.isfinite(out).all()
    # per-sample positions and queries give the same answer as shared ones
    torch.testing.assert_close(net(frames, positions.expand(2, 4), queries.expand(2, 3)), out)
    # a query at another time gives another frame (query tokens attend to each other, so the
    # others move a little too)
    other = net(frames, positions, torch.tensor([1.0, 2.0, 5.0]))
    assert (other[:, 2] - out[:, 2]).abs().max() > (other[:, :2] - out[:, :2]).abs().max()
    # a missing input value has no influence, whatever it holds
    observed = torch.ones(2, 4, 5, dtype=torch.bool)
    observed[0, 1, 2] = False
    changed = frames.clone()
    changed[0, 1, 2] = 1e6
    torch.testing.assert_close(net(changed, positions, queries, observed=observed),
                               net(frames, positions, queries, observed=observed))
    # ... while an observed one does
    assert not torch.allclose(net(changed, positions, queries), out)


@pytest.mark.parametrize("n", [8, 5])  # 5 nodes pad the last group of 2
def test_grouped_tokens_keep_shapes_and_flags(n):
    torch.manual_seed(0)
    den = _randomise_heads(ForecastDenoiser(group=2, **TINY))
    x, t = torch.randn(2, 6, n), torch.rand(2, 6, n)
    t[0, 0, 0] = 0.0
    out = den(x, t)
    assert out.shape == (2, 6, n) and torch.isfinite(out).all()
    # every node has its own output: nodes sharing a token are told apart
    assert not torch.allclose(out[..., 0], out[..., 1])
    frame = _randomise_heads(FrameNet(group=2, **TINY))
    assert frame(torch.randn(2, 3, n), torch.arange(3.0), torch.tensor([3.0, 4.0])).shape == (2, 2, n)
    with pytest.raises(ValueError, match="group must be positive"):
        ForecastDenoiser(group=0, **TINY)


def test_grouped_tokens_are_limited_by_max_nodes():
    den = ForecastDenoiser(max_nodes=4, channels=8, layers=1, heads=2, group=2)
    assert den(torch.randn(1, 3, 4), torch.rand(1)).shape == (1, 3, 4)
    with pytest.raises(ValueError, match="max_nodes"):
        den(torch.randn(1, 3, 5), torch.rand(1))


def test_grouped_max_nodes_error_names_the_series_and_the_limit():
    den = ForecastDenoiser(max_nodes=4, channels=8, layers=1, heads=2, group=2)
    with pytest.raises(ValueError, match=r"5 series.*max_nodes=4"):
        den(torch.randn(1, 3, 5), torch.rand(1))


def test_dyffusion_nets_are_not_a_denoiser():
    nets = DYffusionNets(FrameNet(**TINY), FrameNet(**TINY))
    assert nets.prediction == "x0"
    with pytest.raises(TypeError, match="DYffusion.forecast"):
        nets(torch.zeros(1, 2, 3), torch.zeros(1))
