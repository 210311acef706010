"""The time-series models: masks and times, forecasting, DYffusion's stages and schedule, the
deterministic baseline, ImDiffusion's scores, thresholds, checkpoints and evaluation.

Networks are tiny (8 channels, one layer); trained models take a handful of steps. Analytic
checks use stub networks whose predictions are known exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("pytorch_lightning")
pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")
from torch import nn  # noqa: E402

from polydiff.checkpoint import CheckpointError  # noqa: E402
from polydiff.samplers import KnownValues  # noqa: E402
from polydiff.schedules import VPCosine  # noqa: E402
from polydiff_timeseries.commands import load_model  # noqa: E402
from polydiff_timeseries.data import WindowDataModule  # noqa: E402
from polydiff_timeseries.evaluation import evaluate_forecasters, split_windows  # noqa: E402
from polydiff_timeseries.module import (  # noqa: E402
    ConditionalDiffusion,
    Deterministic,
    DYffusion,
    ImDiffusionDetector,
    choose_threshold,
    rolling_times,
)
from polydiff_timeseries.nets import DYffusionNets, ForecastDenoiser, FrameNet, SpaceTimeTransformer  # noqa: E402

TINY = dict(max_nodes=64, channels=8, layers=1, heads=2)
F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _trainer(max_steps: int, **kw) -> pl.Trainer:
    args = dict(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)
    args.update(kw)
    return pl.Trainer(**args)


def _randomise_heads(module: nn.Module, seed: int = 0) -> nn.Module:
    gen = _gen(seed)
    for m in module.modules():
        if isinstance(m, SpaceTimeTransformer):
            with torch.no_grad():
                m.head.weight.copy_(0.5 * torch.randn(m.head.weight.shape, generator=gen))
                m.head.bias.copy_(0.1 * torch.randn(m.head.bias.shape, generator=gen))
    return module


def _diffusion(context: int = 3, horizon: int = 5, **kw) -> ConditionalDiffusion:
    torch.manual_seed(0)
    kw.setdefault("sampler", "ddim")
    kw.setdefault("sample_steps", 3)
    model = ConditionalDiffusion(ForecastDenoiser(**TINY), VPCosine(), **kw)
    model.data_info = {"context": context, "horizon": horizon}
    return model


# --- rolling times --------------------------------------------------------------------------------
def test_rolling_times_endpoints_order_and_hand_values():
    assert torch.equal(rolling_times(torch.tensor(1.0), 0.7, 6), torch.ones(6, dtype=F64))
    assert torch.equal(rolling_times(torch.tensor(0.0), 0.7, 6), torch.zeros(6, dtype=F64))
    grid = rolling_times(torch.linspace(0, 1, 11), 0.7, 6)  # (11, 6)
    assert grid.shape == (11, 6)
    assert (grid.diff(dim=1) >= 0).all()  # within a window, earlier frames are cleaner
    assert (grid.diff(dim=0) >= 0).all()  # every frame gets noisier with progress
    assert (grid[5, 0] < grid[5, -1]).item()
    # progress 0.5, width 1, three frames: tau = 1, levels 1 - (1 - k/2) = k/2
    torch.testing.assert_close(rolling_times(torch.tensor(0.5), 1.0, 3), torch.tensor([0.0, 0.5, 1.0], dtype=F64))
    # per-window widths; width 0 is one level for the whole window
    got = rolling_times(torch.tensor([0.5, 0.3]), torch.tensor([1.0, 0.0], dtype=F64), 3)
    torch.testing.assert_close(got, torch.tensor([[0.0, 0.5, 1.0], [0.3, 0.3, 0.3]], dtype=F64))


# --- masks ----------------------------------------------------------------------------------------
def test_forecast_region_is_the_context_frames():
    model = _diffusion(context=3, horizon=5).train()
    region = model.known_region(torch.zeros(2, 8, 4))
    expected = torch.zeros(2, 8, 4, dtype=torch.bool)
    expected[:, :3] = True
    assert torch.equal(region, expected)


def test_grating_masks_are_complementary_and_alternate_chunks():
    model = _diffusion(context=0, horizon=8, mask_strategy="grating", grating_width=2)
    hidden0, hidden1 = model.grating_mask(8, 0), model.grating_mask(8, 1)
    assert hidden0.tolist() == [True, True, False, False, True, True, False, False]
    assert torch.equal(hidden0 ^ hidden1, torch.ones(8, dtype=torch.bool))  # every frame exactly once
    model.eval()  # evaluation windows alternate the two phases
    region = model.known_region(torch.zeros(4, 8, 3))
    assert torch.equal(region[0] ^ region[1], torch.ones(8, 3, dtype=torch.bool))
    assert torch.equal(region[0], region[2]) and torch.equal(region[1], region[3])
    assert (region == region[:, :, :1]).all()  # whole frames, all series alike
    model.train()  # training windows draw a phase each
    region = model.known_region(torch.zeros(16, 8, 3), generator=_gen(0))
    frames = region[:, :, 0]
    assert all(torch.equal(f, ~hidden1) or torch.equal(f, ~hidden0) for f in frames)
    assert len({tuple(f.tolist()) for f in frames}) == 2


def test_random_and_mixed_regions():
    model = _diffusion(context=3, horizon=5, mask_strategy="random").train()
    x0 = torch.zeros(32, 8, 4)
    region = model.known_region(x0, generator=_gen(0))
    assert torch.equal(region, model.known_region(x0, generator=_gen(0)))
    known = region.float().mean(dim=(1, 2))
    assert known.min() < 0.4 and known.max() > 0.6  # a random fraction per window
    forecast = torch.zeros(8, 4, dtype=torch.bool)
    forecast[:3] = True
    assert not all(torch.equal(r, forecast) for r in region)
    assert torch.equal(model.eval().known_region(x0), forecast.expand(32, 8, 4))  # evaluation forecasts
    mixed = _diffusion(context=3, horizon=5, mask_strategy="mixed").train().known_region(x0, generator=_gen(1))
    n_forecast = sum(torch.equal(r, forecast) for r in mixed)
    assert 0 < n_forecast < 32
    with pytest.raises(ValueError, match="unknown mask_strategy"):
        _diffusion(mask_strategy="everything")


def test_unpack_batch_intersects_the_region_with_what_is_observed():
    model = _diffusion(context=3, horizon=5).train()
    x0 = torch.randn(2, 8, 4)
    observed = torch.ones(2, 8, 4, dtype=torch.bool)
    observed[0, 1, 2] = False  # a missing context value
    observed[1, 5, 0] = False  # a missing target value
    parts = model.unpack_batch({"x0": x0, "observed": observed})
    known = torch.zeros(2, 8, 4, dtype=torch.bool)
    known[:, :3] = True
    known[0, 1, 2] = False
    assert torch.equal(parts["known_mask"], known)
    loss = observed.clone()
    loss[:, :3] = False  # the targets that are observed
    assert torch.equal(parts["loss_mask"], loss)
    assert isinstance(parts["known"], KnownValues) and parts["known"].mode == "clean"
    assert torch.equal(parts["known"].mask, known)


# --- training times -------------------------------------------------------------------------------
def test_training_times_are_exactly_zero_at_known_entries():
    model = _diffusion(context=3, horizon=5, mask_strategy="mixed").train()
    seen = {}
    model.denoiser.register_forward_pre_hook(lambda mod, args: seen.update(t=args[1]))
    x0 = torch.randn(6, 8, 4)
    observed = torch.rand(6, 8, 4, generator=_gen(3)) > 0.1
    parts = model.unpack_batch({"x0": x0, "observed": observed})
    loss = model.compute_loss(parts, generator=_gen(0))
    assert torch.isfinite(loss)
    t = seen["t"].expand(6, 8, 4)
    known = parts["known_mask"]
    assert known.any() and (~known).any()
    assert (t[known] == 0).all()
    assert (t[~known] > 0).all()


def test_rolling_training_times_stagger_the_target_frames():
    model = _diffusion(context=3, horizon=5, rolling_prob=1.0, rolling_width=1.0).train()
    times = model.sample_times(torch.zeros(16, 8, 2), generator=_gen(0))
    assert times.shape == (16, 8, 2)
    assert (times[..., 0] == times[..., 1]).all()  # one level per frame
    per_frame = times[..., 0]
    assert (per_frame[:, 3:].diff(dim=1) >= 0).all()  # later target frames noisier
    assert (per_frame[:, :3] == per_frame[:, 3:4]).all()  # context frames (known anyway) copy the first
    assert (per_frame >= 0).all() and (per_frame <= model.schedule.t_max).all()
    assert (per_frame[:, -1] > per_frame[:, 3]).any()
    plain = _diffusion(context=3, horizon=5).train().sample_times(torch.zeros(16, 8, 2), generator=_gen(0))
    assert (plain == plain[:, :1, :1]).all()  # without rolling, one level per window


class _ZeroTimeProbe(nn.Module):
    """An eps-denoiser predicting ``value`` exactly where t = 0 and 0 elsewhere."""

    prediction = "eps"

    def __init__(self):
        super().__init__()
        self.value = 0.0
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, cond=None):
        t = t.reshape(*t.shape, *([1] * (x.ndim - t.ndim))).expand_as(x)
        return torch.where(t == 0, torch.full_like(x, self.value), torch.zeros_like(x)) + 0 * self.dummy


def test_rolling_target_frames_at_time_zero_carry_no_loss():
    model = ConditionalDiffusion(_ZeroTimeProbe(), VPCosine(), rolling_prob=1.0, rolling_width=1.0, weighting="none")
    model.data_info = {"context": 2, "horizon": 6}
    model.train()
    x0 = torch.randn(64, 8, 3)
    parts = model.unpack_batch({"x0": x0, "observed": torch.ones_like(x0, dtype=torch.bool)})
    times = model.sample_times(x0, generator=_gen(0))
    assert (times[:, 2:] == 0).any()  # some target frames are drawn exactly clean
    losses = []
    for value in (0.0, 100.0):
        model.denoiser.value = value
        losses.append(model.compute_loss(parts, generator=_gen(0)).item())
    assert losses[0] == pytest.approx(losses[1])


# --- forecasting ----------------------------------------------------------------------------------
def test_forecast_shapes_horizons_and_context_lengths():
    model = _diffusion(context=3, horizon=5)
    ctx = torch.randn(2, 3, 4)
    full = model.forecast(ctx, samples=3, generator=_gen(0))
    assert full.shape == (2, 3, 5, 4) and torch.isfinite(full).all()
    short = model.forecast(ctx, samples=3, horizon=2, generator=_gen(0))
    assert short.shape == (2, 3, 2, 4)
    torch.testing.assert_close(short, full[:, :, :2])
    longer = torch.cat([torch.randn(2, 4, 4), ctx], dim=1)  # only the last 3 frames count
    torch.testing.assert_close(model.forecast(longer, samples=3, generator=_gen(0)), full)
    with pytest.raises(ValueError, match="horizon 6 is longer than the 5 frames"):
        model.forecast(ctx, horizon=6)
    with pytest.raises(ValueError, match="horizon must be positive"):
        model.forecast(ctx, horizon=0)
    with pytest.raises(ValueError, match="needs 3 context frames, got 2"):
        model.forecast(ctx[:, :2])
    with pytest.raises(ValueError, match=r"\(batch, frames, series\)"):
        model.forecast(ctx[0])
    with pytest.raises(RuntimeError, match="no data description"):
        ConditionalDiffusion(ForecastDenoiser(**TINY)).forecast(ctx)


def test_forecast_seeds():
    model = _diffusion()
    ctx = torch.randn(2, 3, 4)
    a = model.forecast(ctx, samples=2, generator=_gen(0))
    assert torch.equal(a, model.forecast(ctx, samples=2, generator=_gen(0)))
    assert not torch.allclose(a, model.forecast(ctx, samples=2, generator=_gen(1)))
    assert not torch.allclose(a[:, 0], a[:, 1])  # members of one call differ


def test_missing_context_values_are_not_given_as_known(monkeypatch):
    model = _diffusion(context=3, horizon=5)
    ctx = torch.randn(1, 3, 4)
    ctx[0, 1, 2] = float("nan")
    ctx[0, 2, 0] = float("nan")
    seen = {}
    original = model.sample

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "sample", spy)
    out = model.forecast(ctx, samples=2, generator=_gen(0))
    assert torch.isfinite(out).all()
    known = seen["known"]
    expected = torch.zeros(2, 8, 4, dtype=torch.bool)
    expected[:, :3] = torch.isfinite(ctx[0])
    assert torch.equal(known.mask, expected)
    assert torch.isfinite(known.values).all()
    torch.testing.assert_close(known.values[0, :3][expected[0, :3]], ctx[0][torch.isfinite(ctx[0])])


def test_rolling_forecast_uses_a_per_frame_grid(monkeypatch):
    model = _diffusion(context=3, horizon=5, rolling_prob=0.5)
    seen = {}
    original = model.sample
    monkeypatch.setattr(model, "sample", lambda *a, **k: seen.update(k) or original(*a, **k))
    out = model.forecast(torch.randn(2, 3, 4), samples=2, rolling=True, generator=_gen(0))
    assert out.shape == (2, 2, 5, 4) and torch.isfinite(out).all()
    grid = seen["grid"]
    assert grid.shape == (4, 1, 8)
    t_max = model.schedule.t_max
    torch.testing.assert_close(grid[0], torch.full((1, 8), t_max, dtype=F64))  # all noise first
    assert torch.equal(grid[-1], torch.zeros(1, 8, dtype=F64))  # all clean last
    assert (grid[:, 0, 3:].diff(dim=1) >= 0).all() and (grid.diff(dim=0) <= 0).all()
    assert model.network_evaluations() == 3 and model.network_evaluations(sampler="heun", steps=3) == 5


# --- deterministic baseline -----------------------------------------------------------------------
class _ZeroFrames(nn.Module):
    """A frame network predicting exactly zero (the standardised mean) at every query."""

    prediction = "x0"

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, frames, positions, queries, observed=None, level=None):
        q = torch.as_tensor(queries).shape[-1]
        return frames.new_zeros(frames.shape[0], q, frames.shape[2]) + 0 * self.dummy


def test_deterministic_forecast_is_one_member():
    torch.manual_seed(0)
    model = Deterministic(_randomise_heads(FrameNet(**TINY)))
    model.data_info = {"context": 3, "horizon": 4}
    ctx = torch.randn(2, 5, 6)
    out = model.forecast(ctx, samples=7)
    assert out.shape == (2, 1, 4, 6) and torch.isfinite(out).all()
    torch.testing.assert_close(model.forecast(ctx, horizon=2), out[:, :, :2])
    assert model.network_evaluations() == 1
    assert model.training  # forecasting leaves the mode as it was


def test_deterministic_loss_ignores_missing_targets():
    torch.manual_seed(0)
    model = Deterministic(_randomise_heads(FrameNet(**TINY)))
    model.data_info = {"context": 3, "horizon": 4}
    x0 = torch.randn(2, 7, 3)
    observed = torch.ones(2, 7, 3, dtype=torch.bool)
    observed[0, 5, 1] = False
    changed = x0.clone()
    changed[0, 5, 1] = 1e3
    a = model.compute_loss({"x0": x0, "observed": observed})
    b = model.compute_loss({"x0": changed, "observed": observed})
    torch.testing.assert_close(a, b)


def test_deterministic_anomaly_scores_by_hand():
    model = Deterministic(_ZeroFrames())
    model.data_info = {"context": 3, "horizon": 4}
    values = torch.randn(13, 2)
    values[6, 1] = float("nan")
    scores = model.anomaly_scores(values)
    expected = torch.zeros(13, dtype=F64)
    for t in range(3, 13):
        row = values[t][torch.isfinite(values[t])]
        expected[t] = (row**2).mean().double()
    torch.testing.assert_close(scores, expected, rtol=1e-6, atol=1e-7)


def test_deterministic_training_reduces_the_loss_on_a_sine(tmp_path):
    import pandas as pd

    t = np.arange(240)
    pd.DataFrame({"a": np.sin(2 * np.pi * t / 12), "b": np.cos(2 * np.pi * t / 12)}).to_csv(tmp_path / "sine.csv",
                                                                                          index=False)
    dm = WindowDataModule(str(tmp_path / "sine.csv"), context=6, horizon=3, batch_size=16)
    dm.setup()
    torch.manual_seed(0)
    model = Deterministic(FrameNet(**TINY), ema_decay=0.0,
                          optimizer=lambda params: torch.optim.Adam(params, lr=1e-2))
    model.data_info = dm.info()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        before = float(model.compute_loss(batch))
    _trainer(40).fit(model, dm)
    with torch.no_grad():
        after = float(model.compute_loss(batch))
    assert before > 0.5  # zero prediction of standardised data
    assert after < 0.5 * before


# --- DYffusion ------------------------------------------------------------------------------------
def _dyffusion(context: int = 3, horizon: int = 5, dropout: float = 0.3, **kw) -> DYffusion:
    torch.manual_seed(0)
    nets = DYffusionNets(FrameNet(**TINY, dropout=dropout), FrameNet(**TINY))
    model = DYffusion(_randomise_heads(nets), **kw)
    model.data_info = {"context": context, "horizon": horizon}
    return model


def test_dyffusion_interpolation_times():
    model = _dyffusion(horizon=8)
    assert model.interpolation_times() == list(range(8))
    assert model.interpolation_times(3) == [0, 4, 7]  # linspace(0, 7, 3) = 0, 3.5, 7
    assert model.interpolation_times(4) == [0, 2, 5, 7]  # 0, 2.33, 4.67, 7
    assert model.interpolation_times(20) == list(range(8))
    assert _dyffusion(horizon=8, sampling_steps=2).interpolation_times() == [0, 7]
    with pytest.raises(ValueError, match="sampling_steps"):
        _dyffusion(sampling_steps=0)
    with pytest.raises(TypeError, match="DYffusionNets"):
        DYffusion(FrameNet(**TINY))


@pytest.mark.parametrize(("steps", "cold"), [(None, True), (3, True), (None, False), (2, True)])
def test_dyffusion_network_evaluations_count_the_calls(steps, cold):
    model = _dyffusion(horizon=6, cold_sampling=cold)
    rows = []  # batch rows per call: the lead times between are folded into one call's batch
    for net in (model.denoiser.interpolator, model.denoiser.forecaster):
        net.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    out = model.forecast(torch.randn(2, 3, 4), samples=2, steps=steps, generator=_gen(0))
    assert out.shape == (2, 2, 6, 4) and torch.isfinite(out).all()
    assert sum(rows) == 4 * model.network_evaluations(steps=steps)  # 2 windows x 2 samples


def test_dyffusion_forecast_shapes_and_seeds():
    model = _dyffusion()
    ctx = torch.randn(2, 4, 3)
    a = model.forecast(ctx, samples=3, generator=_gen(0))
    assert a.shape == (2, 3, 5, 3) and torch.isfinite(a).all()
    assert torch.equal(a, model.forecast(ctx, samples=3, generator=_gen(0)))
    assert not torch.allclose(a, model.forecast(ctx, samples=3, generator=_gen(1)))
    assert not torch.allclose(a[:, 0], a[:, 1])  # dropout spreads the members
    assert model.forecast(ctx, samples=1, horizon=2, generator=_gen(0)).shape == (2, 1, 2, 3)
    with pytest.raises(ValueError, match="longer"):
        model.forecast(ctx, horizon=6)
    state = torch.get_rng_state()
    model.forecast(ctx, generator=_gen(0))
    assert torch.equal(torch.get_rng_state(), state)  # a seeded forecast leaves the global RNG alone
    assert model.denoiser.training == model.denoiser.interpolator.training  # modes restored


def test_dyffusion_forecasts_without_generator_differ_between_calls():
    model = _dyffusion()
    ctx = torch.randn(1, 3, 4)
    assert not torch.allclose(model.forecast(ctx, samples=2), model.forecast(ctx, samples=2))


def test_dyffusion_lead_times_are_read_as_the_interpolator_was_trained():
    model = _dyffusion(dropout=0.0)  # deterministic interpolator
    ctx = torch.randn(2, 3, 4)
    out = model.forecast(ctx, samples=1)[:, 0]  # (B, H, N)
    nets = model.sampling_denoiser().eval()
    obs = torch.ones_like(ctx, dtype=torch.bool)
    end = out[:, -1]
    for i in range(1, 5):
        single = model._interpolate(nets.interpolator, ctx, obs, end, torch.tensor([float(i)]))[:, 0]
        torch.testing.assert_close(out[:, i - 1], single, rtol=1e-5, atol=1e-5)


class _Stages(pl.Callback):
    def __init__(self):
        self.stages, self.snapshots = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.stages.append(module.stage)
        nets = module.denoiser
        self.snapshots.append([p.detach().clone() for p in (*nets.interpolator.parameters(),
                                                             *nets.forecaster.parameters())])


def test_dyffusion_trains_interpolator_then_forecaster(fields_nc):
    dm = WindowDataModule(str(fields_nc), context=3, horizon=4, batch_size=8, coarsen=2)
    torch.manual_seed(0)
    nets = DYffusionNets(FrameNet(**TINY, dropout=0.1), FrameNet(**TINY))
    model = DYffusion(nets, interpolator_steps=2, val_samples=0, ema_decay=0.0)
    probe = _Stages()
    _trainer(4, callbacks=[probe]).fit(model, dm)
    assert probe.stages == ["interpolator", "interpolator", "forecaster", "forecaster"]
    assert model.stage == "forecaster"
    n_interp = len(list(nets.interpolator.parameters()))
    final = [p.detach() for p in (*nets.interpolator.parameters(), *nets.forecaster.parameters())]

    def same(a, b, part):
        sl = slice(0, n_interp) if part == "interpolator" else slice(n_interp, None)
        return all(torch.equal(x, y) for x, y in zip(a[sl], b[sl]))

    start, switch = probe.snapshots[0], probe.snapshots[2]
    assert not same(start, switch, "interpolator") and same(start, switch, "forecaster")  # stage 1
    assert same(switch, final, "interpolator") and not same(switch, final, "forecaster")  # stage 2
    one_step = _dyffusion(horizon=1)
    assert one_step.stage == "forecaster"  # nothing to interpolate between adjacent frames


# --- ImDiffusion ----------------------------------------------------------------------------------
class _FramePattern(nn.Module):
    """An x0-denoiser predicting ``pattern[l, n]`` at frame ``l`` of every window, whatever its input."""

    prediction = "x0"

    def __init__(self, pattern: torch.Tensor):
        super().__init__()
        self.register_buffer("pattern", pattern)

    def forward(self, x, t, cond=None):
        return self.pattern.to(x.dtype).expand_as(x)


def _expected_scores(values, pattern, length, first_masks, center):
    """Anomaly scores recomputed by hand: windows every length/2 frames (the last one reaching
    the end), two complementary hidden masks per window, each window's central half counted
    (plus the outer quarters at the series' ends), per frame the mean squared error over its
    hidden observed entries, averaged over the windows and masks that count it."""
    total = values.shape[0]
    starts = list(range(0, total - length + 1, length // 2))
    if starts[-1] + length < total:
        starts.append(total - length)
    quarter = length // 4
    score_sum, count = torch.zeros(total, dtype=F64), torch.zeros(total, dtype=F64)
    for s, first in zip(starts, first_masks):
        for hidden in (first, ~first):
            x = values[s:s + length].double()
            observed = torch.isfinite(x)
            x = torch.where(observed, x, torch.zeros_like(x))
            known = observed & ~hidden
            if center:
                x = x - (x * known).sum(0) / known.sum(0).clamp(min=1)
            for o in range(length):
                central = quarter <= o < length - quarter or (s == starts[0] and o < quarter) or \
                    (s == starts[-1] and o >= length - quarter)
                if not hidden[o].any() or not central:
                    continue
                sel = observed[o] & hidden[o]
                err = ((pattern[o].double() - x[o]) ** 2)[sel].sum() / max(int(sel.sum()), 1)
                score_sum[s + o] += float(err)
                count[s + o] += 1
    return score_sum / count.clamp(min=1), starts


@pytest.mark.parametrize("center", [False, True])
def test_imdiffusion_scores_are_the_imputation_errors_by_hand(center):
    length, n, total = 8, 3, 21
    pattern = torch.arange(length * n, dtype=torch.float32).reshape(length, n) / 10.0
    model = ImDiffusionDetector(_FramePattern(pattern), VPCosine(), grating_width=2, sampler="ddim", sample_steps=4,
                                center=center)
    model.data_info = {"context": 0, "horizon": length}
    values = torch.randn(total, n, generator=_gen(0))
    values[5, 1] = float("nan")
    values[9, :] = float("nan")  # a frame with nothing observed scores 0
    scores = model.anomaly_scores(values, generator=_gen(0), batch_windows=3)
    grating = (torch.arange(length) // 2 % 2 == 0)[:, None].expand(length, n)
    expected, starts = _expected_scores(values, pattern, length, [grating] * 5, center)
    assert starts == [0, 4, 8, 12, 13]
    assert scores.shape == (total,) and scores.dtype == F64
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    assert scores[9] == 0


def test_imdiffusion_scores_with_a_network_are_finite_per_step():
    torch.manual_seed(0)
    model = ImDiffusionDetector(_randomise_heads(ForecastDenoiser(**TINY)), VPCosine(), grating_width=2,
                                sampler="ddim", sample_steps=3)
    model.data_info = {"context": 0, "horizon": 8}
    values = torch.randn(30, 3)
    values[4, 0] = float("nan")
    scores = model.anomaly_scores(values, generator=_gen(0))
    assert scores.shape == (30,) and torch.isfinite(scores).all() and (scores >= 0).all()
    torch.testing.assert_close(scores, model.anomaly_scores(values, generator=_gen(0)))
    with pytest.raises(ValueError, match="fewer than the model's window of 8"):
        model.anomaly_scores(values[:7])
    with pytest.raises(ValueError, match="ensemble_fraction"):
        ImDiffusionDetector(ForecastDenoiser(**TINY), ensemble_fraction=0.0)


def test_choose_threshold_rules():
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.05])
    labels = np.array([0, 1, 0, 1, 0, 0])
    chosen = choose_threshold(scores, labels, 0.5)
    assert chosen["value"] == pytest.approx(0.8) and "best F1" in chosen["rule"]
    for no_anomaly in (None, np.zeros(6, dtype=int), np.ones(6, dtype=int)):
        chosen = choose_threshold(scores, no_anomaly, 0.5)
        assert chosen["value"] == pytest.approx(0.25)  # the median of the six scores
        assert chosen["rule"] == "0.5 quantile of validation scores"


# --- checkpoints ----------------------------------------------------------------------------------
CONFIG = {
    "class_path": "polydiff_timeseries.module.ConditionalDiffusion",
    "init_args": {
        "denoiser": {"class_path": "polydiff_timeseries.nets.ForecastDenoiser", "init_args": TINY},
        "schedule": {"class_path": "polydiff.schedules.VPCosine"},
        "sampler": "ddim", "sample_steps": 3, "val_samples": 0,
    },
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_fields):
    """A ConditionalDiffusion trained 3 steps on the fields (context 3, horizon 4), saved as a checkpoint."""
    root = tmp_path_factory.mktemp("ts-module")
    path = root / "fields.nc"
    make_fields(200).to_netcdf(path, engine="h5netcdf")
    dm = WindowDataModule(str(path), context=3, horizon=4, batch_size=8)
    torch.manual_seed(0)
    model = ConditionalDiffusion(ForecastDenoiser(**TINY), VPCosine(), sampler="ddim", sample_steps=3, val_samples=0)
    model.plugin_name, model.polydiff_config = "timeseries", CONFIG
    trainer = _trainer(3)
    trainer.fit(model, dm)
    ckpt = root / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return model.eval(), ckpt, path


def test_checkpoint_round_trip_gives_the_same_forecasts(trained):
    model, ckpt, _ = trained
    loaded = load_model(ckpt)
    assert isinstance(loaded, ConditionalDiffusion) and not loaded.training
    assert loaded.data_info == model.data_info
    assert loaded.data_info["layout"]["variables"] == ["u", "s"] and loaded.context == 3
    ctx = torch.randn(2, 3, 13)
    torch.testing.assert_close(loaded.forecast(ctx, samples=2, generator=_gen(5)),
                               model.forecast(ctx, samples=2, generator=_gen(5)))


def test_load_model_rejects_other_files(tmp_path, trained):
    plain = tmp_path / "plain.ckpt"
    plain.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_model(plain)
    other = tmp_path / "audio.ckpt"
    torch.save({"polydiff": {"format": 1, "plugin": "audio"}, "state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="plugin 'audio', not 'timeseries'"):
        load_model(other)
    checkpoint = torch.load(trained[1], map_location="cpu", weights_only=True)
    del checkpoint["timeseries"]
    bare = tmp_path / "bare.ckpt"
    torch.save(checkpoint, bare)
    with pytest.raises(CheckpointError, match="has no .timeseries. record"):
        load_model(bare)


# --- evaluation -----------------------------------------------------------------------------------
def test_split_windows_by_hand():
    values = np.arange(20.0).reshape(10, 2)
    ctx, tgt, firsts = split_windows(values, 2, 10, context=2, horizon=3)
    assert firsts == [4, 7]
    np.testing.assert_array_equal(ctx, [values[2:4], values[5:7]])
    np.testing.assert_array_equal(tgt, [values[4:7], values[7:10]])
    _, _, firsts = split_windows(np.zeros((40, 1)), 0, 40, context=2, horizon=3, max_windows=3)
    assert firsts == [2, 20, 38 - 3]  # 12 windows, the first, middle and last kept
    with pytest.raises(ValueError, match=r"the split \[2, 6\) holds no window"):
        split_windows(values, 2, 6, context=2, horizon=3)


def test_evaluate_forecasters_scores_models_and_references_in_data_units(trained):
    model, _, path = trained
    zero = Deterministic(_ZeroFrames())  # predicts the training mean exactly
    zero.data_info = model.data_info
    results = evaluate_forecasters({"diffusion": model, "mean": zero}, path, samples=3, max_windows=4)
    assert set(results["methods"]) == {"persistence", "climatology", "diffusion", "mean"}
    assert results["windows"] == 4 and results["split"] == "test"
    assert results["units"] == "m/s, K"
    for name, row in results["methods"].items():
        assert np.isfinite(row["crps"]) and np.isfinite(row["mse"]), name
        assert row["count"] == 4 * 4 * 13
    assert results["methods"]["diffusion"]["nfe"] == 3 and results["methods"]["mean"]["nfe"] == 1
    # by hand: test split [160, 200), windows of 3 + 4 frames, firsts 163, 167, ..., 195 -> 4 kept
    from polydiff_timeseries.data import Layout, open_source

    raw = Layout.from_dict(model.data_info["layout"]).read(open_source(path))
    _, truth, firsts = split_windows(raw, 160, 200, 3, 4, max_windows=4)
    persistence = np.stack([np.repeat(raw[f - 1][None], 4, axis=0) for f in firsts])
    assert results["methods"]["persistence"]["mae"] == pytest.approx(np.abs(persistence - truth).mean(), rel=1e-5)
    mean = np.concatenate([np.full(12, model.data_info["scaler"]["mean"][0]), [model.data_info["scaler"]["mean"][1]]])
    assert results["methods"]["mean"]["mse"] == pytest.approx(((mean - truth) ** 2).mean(), rel=1e-4)
    assert results["methods"]["mean"]["crps"] == pytest.approx(results["methods"]["mean"]["mae"])


def test_evaluate_forecasters_refuses_models_of_other_data(trained):
    model, _, path = trained
    other = Deterministic(_ZeroFrames())
    other.data_info = {**model.data_info, "horizon": 2}
    with pytest.raises(ValueError, match="'other' was trained on other data"):
        evaluate_forecasters({"m": model, "other": other}, path)
    with pytest.raises(ValueError, match="split must be val or test"):
        evaluate_forecasters({"m": model}, path, split="train")


def test_imdiffusion_random_score_masks_hide_every_entry_once():
    """With random masks each frame is half hidden in each of the two passes (exact x0 stub)."""
    length, n, total = 8, 4, 16
    pattern = torch.zeros(length, n)
    model = ImDiffusionDetector(_FramePattern(pattern), VPCosine(), score_mask="random", sampler="ddim",
                                sample_steps=2, center=False)
    model.data_info = {"context": 0, "horizon": length}
    values = torch.randn(total, n, generator=_gen(3))
    scores = model.anomaly_scores(values, generator=_gen(0))
    g = _gen(0)  # the masks are drawn first, one (L, N) draw per window in order
    firsts = [torch.rand(length, n, generator=g) < 0.5 for _ in range(3)]
    expected, starts = _expected_scores(values, pattern, length, firsts, center=False)
    assert starts == [0, 4, 8]
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="score_mask"):
        ImDiffusionDetector(_FramePattern(pattern), score_mask="checkerboard")


def test_imdiffusion_centres_training_windows_on_their_known_entries():
    model = ImDiffusionDetector(ForecastDenoiser(**TINY), VPCosine(), grating_width=2)
    model.data_info = {"context": 0, "horizon": 8}
    x0 = torch.randn(4, 8, 3, generator=_gen(1)) + 5.0  # far from the training mean, as a trend leaves it
    parts = model.unpack_batch({"x0": x0, "observed": torch.ones_like(x0, dtype=torch.bool)})
    known = parts["known_mask"].double()
    known_mean = (parts["x0"].double() * known).sum(1) / known.sum(1)
    torch.testing.assert_close(known_mean, torch.zeros_like(known_mean), atol=1e-5, rtol=0)
    assert torch.equal(parts["known"].values, parts["x0"])
    torch.testing.assert_close(parts["x0"] - x0, (parts["x0"] - x0)[:, :1].expand_as(x0))  # one shift per window and series
    plain = ImDiffusionDetector(ForecastDenoiser(**TINY), VPCosine(), center=False)
    plain.data_info = model.data_info
    assert torch.equal(plain.unpack_batch({"x0": x0, "observed": torch.ones_like(x0, dtype=torch.bool)})["x0"], x0)
