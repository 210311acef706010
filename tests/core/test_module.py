"""DiffusionModule: the loss by hand, weightings, condition dropout, EMA use, a short fit."""

from __future__ import annotations

import functools
import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from polydiff.demo import MixtureDataModule, MLPDenoiser
from polydiff.denoiser import Denoiser
from polydiff.module import DiffusionModule, SampleMetrics
from polydiff.schedules import EDM, RectifiedFlow, VPCosine, VPLinear



class Recorder(Denoiser):
    """Wraps a network and records what it was called with."""

    def __init__(self, net: nn.Module, prediction: str):
        super().__init__(prediction=prediction)
        self.net = net
        self.calls: list[tuple] = []

    def forward(self, x, t, cond=None):
        self.calls.append((x.detach().clone(), torch.as_tensor(t).detach().clone(), cond))
        return self.net(x, t, cond)

    def drop_cond(self, cond, mask):
        return self.net.drop_cond(cond, mask)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def _batch(n: int = 64, seed: int = 1) -> dict:
    x0 = torch.randn(n, 2, generator=_gen(seed)) * 2
    return {"x0": x0, "cond": None, "y": None, "loss_mask": None}


# --- the loss -------------------------------------------------------------------------------

def test_native_loss_is_the_mse_against_the_true_target_by_hand():
    torch.manual_seed(0)
    schedule = VPCosine()
    net = Recorder(MLPDenoiser(hidden=16, depth=1, prediction="v"), "v")
    module = DiffusionModule(net, schedule=schedule)
    batch = _batch()
    loss = module.compute_loss(batch, generator=_gen())
    x_t, t, _ = net.calls[-1]
    a = schedule.alpha(t).float()[:, None]
    s = schedule.sigma(t).float()[:, None]
    eps = (x_t - a * batch["x0"]) / s  # the noise the module drew
    target = a * eps - s * batch["x0"]  # v = alpha eps - sigma x0
    expected = (net.net(x_t, t) - target).square().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_eps_loss_equals_snr_weighted_x0_loss():
    torch.manual_seed(0)
    net = MLPDenoiser(hidden=16, depth=1, prediction="eps")
    eps_loss = DiffusionModule(net, loss_space="native").compute_loss(_batch(), generator=_gen())
    x0_snr = DiffusionModule(net, loss_space="x0", weighting="snr").compute_loss(_batch(), generator=_gen())
    x0_plain = DiffusionModule(net, loss_space="x0").compute_loss(_batch(), generator=_gen())
    assert eps_loss.item() == pytest.approx(x0_snr.item(), rel=1e-4)
    assert abs(x0_plain.item() - eps_loss.item()) > 0.1 * eps_loss.item()  # the weight matters


@pytest.mark.parametrize("weighting", ["min_snr", "edm"])
def test_reference_weightings_do_not_depend_on_the_loss_space(weighting):
    torch.manual_seed(0)
    net = MLPDenoiser(hidden=16, depth=1, prediction="eps")
    losses = {}
    for space in ("eps", "x0", "v", "flow", "score"):
        module = DiffusionModule(net, loss_space=space, weighting=weighting)
        losses[space] = module.compute_loss(_batch(), generator=_gen()).item()
    for space, value in losses.items():
        assert value == pytest.approx(losses["eps"], rel=1e-3), space


def test_min_snr_by_hand_on_the_eps_loss():
    torch.manual_seed(0)
    schedule = VPLinear()
    net = Recorder(MLPDenoiser(hidden=16, depth=1, prediction="eps"), "eps")
    module = DiffusionModule(net, schedule=schedule, weighting="min_snr", min_snr_gamma=5.0)
    batch = _batch()
    loss = module.compute_loss(batch, generator=_gen())
    x_t, t, _ = net.calls[-1]
    a, s = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
    eps = (x_t - a.float() * batch["x0"]) / s.float()
    snr = (a / s) ** 2
    per_sample = (net.net(x_t, t) - eps).square().double()
    expected = (per_sample * snr.clamp(max=5.0) / snr).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_min_snr_on_a_v_loss_is_hangs_v_weight():
    # Hang et al. 2023: for v-prediction under a VP schedule the weight is min(snr, gamma)/(snr + 1).
    module = DiffusionModule(MLPDenoiser(prediction="v"), schedule=VPLinear(), weighting="min_snr")
    t = torch.tensor([0.05, 0.3, 0.9])
    snr = torch.exp(VPLinear().log_snr(t))
    weight = module.loss_weight(t, torch.zeros(3, 2)).squeeze(1)
    assert torch.allclose(weight, snr.clamp(max=5.0) / (snr + 1), rtol=1e-6)


def test_edm_weight_by_hand():
    # EDM: sigma = sigma_max * t = 1 at t = 1/80; lambda = (1 + 0.25) / (1 * 0.25) = 5.
    module = DiffusionModule(MLPDenoiser(prediction="x0"), schedule=EDM(sigma_data=0.5), weighting="edm")
    w = module.loss_weight(torch.tensor([1 / 80, 2 / 80]), torch.zeros(2, 2)).squeeze(1)
    assert w.tolist() == pytest.approx([5.0, (4 + 0.25) / (4 * 0.25)])
    # A VP schedule has no sigma_data: 0.5 is used, with sigma_ve^2 = (1 - abar) / abar.
    vp = VPLinear()
    module = DiffusionModule(MLPDenoiser(prediction="x0"), schedule=vp, weighting="edm")
    abar = vp.alphas_cumprod[499].item()  # time 500/1000
    s2 = (1 - abar) / abar
    w = module.loss_weight(torch.tensor([0.5]), torch.zeros(1, 2)).item()
    assert w == pytest.approx((s2 + 0.25) / (s2 * 0.25), rel=1e-9)


def test_loss_mask_averages_over_kept_elements_only():
    torch.manual_seed(0)
    net = Recorder(MLPDenoiser(dim=3, hidden=16, depth=1, prediction="x0"), "x0")

    class Flat(Denoiser):  # (B, T, 3) states through a per-point network
        def __init__(self):
            super().__init__(prediction="x0")
            self.inner = net

        def forward(self, x, t, cond=None):
            b, n, d = x.shape
            return self.inner(x.reshape(b * n, d), t.repeat_interleave(n), None).reshape(b, n, d)

    module = DiffusionModule(Flat())
    x0 = torch.randn(4, 5, 3, generator=_gen(3))
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[:, :2] = True
    loss = module.compute_loss({"x0": x0, "loss_mask": mask}, generator=_gen())
    x_t, t, _ = net.calls[-1]
    pred = net.net(x_t, t).reshape(4, 5, 3)
    expected = (pred - x0)[:, :2].square().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_elements_observed_exactly_carry_no_weight():
    module = DiffusionModule(MLPDenoiser(prediction="eps"), weighting="snr")
    w = module.loss_weight(torch.tensor([[0.0, 0.5]]), torch.zeros(1, 2))
    assert w[0, 0] == 0 and w[0, 1] > 0


# --- condition dropout ----------------------------------------------------------------------

def test_cond_dropout_drops_the_requested_fraction_through_drop_cond():
    net = Recorder(MLPDenoiser(hidden=8, depth=0, num_classes=8), "eps")
    module = DiffusionModule(net, cond_dropout=0.3)
    n = 20_000
    labels = torch.arange(n) % 8
    module.compute_loss({"x0": torch.randn(n, 2), "cond": labels}, generator=_gen())
    seen = net.calls[-1][2]
    dropped = seen == 8  # MLPDenoiser's dedicated null index
    assert abs(dropped.float().mean().item() - 0.3) < 0.015
    assert torch.equal(seen[~dropped], labels[~dropped])
    module.compute_loss({"x0": torch.randn(n, 2), "cond": labels}, generator=_gen(), drop_cond=False)
    assert torch.equal(net.calls[-1][2], labels)


def test_cond_dropout_without_drop_cond_zeroes_the_condition():
    class Plain(nn.Module):  # no drop_cond: polydiff.denoiser.drop_condition is used
        prediction = "eps"

        def __init__(self):
            super().__init__()
            self.seen = None
            self.lin = nn.Linear(2, 2)

        def forward(self, x, t, cond=None):
            self.seen = cond
            return self.lin(x)

    net = Plain()
    module = DiffusionModule(net, cond_dropout=0.5)
    cond = torch.ones(1000, 4)
    module.compute_loss({"x0": torch.randn(1000, 2), "cond": cond}, generator=_gen())
    rows_zero = (net.seen == 0).all(dim=1)
    assert 0.4 < rows_zero.float().mean().item() < 0.6
    assert (net.seen[~rows_zero] == 1).all()


# --- configuration --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, listed",
    [
        ({"loss_space": "noise"}, "native, eps, x0, v, flow, score"),
        ({"weighting": "p2"}, "none, snr, min_snr, edm"),
        ({"grid": "cosine"}, "auto, uniform, karras, logsnr"),
        ({"sampler": "dpm3"}, ".*dpmpp_2m"),
        ({"lr_scheduler_interval": "batch"}, "step, epoch"),
    ],
)
def test_enum_arguments_list_the_valid_values(kwargs, listed):
    with pytest.raises(ValueError, match="valid: " + listed):
        DiffusionModule(MLPDenoiser(), **kwargs)


def test_a_denoiser_must_declare_its_prediction():
    with pytest.raises(TypeError, match="prediction"):
        DiffusionModule(nn.Linear(2, 2))


def test_unpack_batch_errors_name_the_fix():
    module = DiffusionModule(MLPDenoiser())
    with pytest.raises(TypeError, match="unpack_batch"):
        module.unpack_batch((torch.zeros(2, 2),))
    with pytest.raises(KeyError, match="x0"):
        module.unpack_batch({"points": torch.zeros(2, 2)})
    parts = module.unpack_batch({"x0": torch.zeros(2, 2), "extra": 1})
    assert parts["cond"] is None and parts["extra"] == 1


def test_configurable_from_a_class_path_config():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=DiffusionModule)
    config = {
        "class_path": "polydiff.module.DiffusionModule",
        "init_args": {
            "denoiser": {"class_path": "polydiff.demo.MLPDenoiser", "init_args": {"hidden": 8, "prediction": "v"}},
            "schedule": {"class_path": "polydiff.schedules.RectifiedFlow"},
            "weighting": "min_snr",
            "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05}},
            "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 10}},
        },
    }
    init = parser.instantiate(parser.parse_object({"model": config})) if hasattr(parser, "instantiate") \
        else parser.instantiate_classes(parser.parse_object({"model": config}))
    module = init.model
    assert isinstance(module.schedule, RectifiedFlow) and module.denoiser.prediction == "v"
    opt = module.configure_optimizers()
    assert isinstance(opt["optimizer"], torch.optim.SGD)
    assert opt["optimizer"].param_groups[0]["lr"] == 0.05
    assert opt["lr_scheduler"]["interval"] == "step"
    assert isinstance(opt["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)


def test_default_optimizer_is_adamw_over_the_denoiser_only():
    module = DiffusionModule(MLPDenoiser(hidden=8))
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 1e-3
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert ids == {id(p) for p in module.denoiser.parameters()}


def test_checkpoint_record_and_plain_config_check():
    module = DiffusionModule(MLPDenoiser(hidden=8))
    module.plugin_name = "demo"
    module.polydiff_config = {"class_path": "polydiff.module.DiffusionModule", "init_args": {"sample_steps": 5}}
    record: dict = {}
    module.on_save_checkpoint(record)
    meta = record["polydiff"]
    assert meta["format"] == 1 and meta["plugin"] == "demo"
    assert meta["module_class"] == "polydiff.module.DiffusionModule"
    assert meta["model_config"]["init_args"]["sample_steps"] == 5
    module.polydiff_config = {"init_args": {"bad": object()}}
    with pytest.raises(TypeError, match=r"polydiff_config\.init_args\.bad"):
        module.on_save_checkpoint({})


# --- EMA and sampling -----------------------------------------------------------------------

def test_ema_start_copies_until_the_start_step_then_averages():
    net = MLPDenoiser(hidden=8, depth=0)
    module = DiffusionModule(net, ema_decay=0.9, ema_start=3)
    for step in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        module.update_ema(step)
        ema_w, live_w = module.ema.module.inp.weight, net.inp.weight
        if step < 3:
            assert torch.equal(ema_w, live_w) and int(module.ema.num_updates) == 0
        else:
            assert not torch.equal(ema_w, live_w)
    assert int(module.ema.num_updates) == 2


def test_sample_restores_mode_and_uses_live_weights_before_any_update():
    module = DiffusionModule(MLPDenoiser(hidden=8, depth=0), sample_steps=3)
    module.train()
    with torch.no_grad():  # make the live weights differ from the (never updated) EMA copy
        module.denoiser.out[-1].bias.add_(1.0)
    x = module.sample((4, 2), generator=_gen())
    assert module.training and not x.requires_grad and x.shape == (4, 2)
    assert torch.equal(x, module.sample((4, 2), generator=_gen(), use_ema=False))
    start = module.schedule.prior((4, 2), generator=_gen())
    assert torch.equal(module.sample(start, generator=_gen()), x)  # a start state is used as is


class CountingMetrics(SampleMetrics):
    def __init__(self):
        self.calls = 0

    def __call__(self, samples, batch):
        self.calls += 1
        assert samples.shape == batch["x0"].shape
        return {"mean_norm": samples.norm(dim=-1).mean(), "constant": 1.5}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A short fit on the ring mixture, with the loss of a fixed batch before and after."""
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    data = MixtureDataModule(n_train=4096, n_val=256, batch_size=256)
    data.setup()
    module = DiffusionModule(
        MLPDenoiser(hidden=64, depth=2, prediction="v"),
        ema_decay=0.9,
        sample_steps=5,
        val_metrics=CountingMetrics(),
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
    )
    probe = module.unpack_batch(next(iter(data.val_dataloader())))
    before = module.compute_loss(probe, generator=_gen(), drop_cond=False).item()
    trainer = _trainer(tmp_path_factory.mktemp("fit"), max_steps=150, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    after = module.compute_loss(probe, generator=_gen(), drop_cond=False).item()
    return {"module": module, "trainer": trainer, "data": data, "before": before, "after": after}


def test_short_fit_lowers_the_loss(fitted):
    # The v-space loss of this data has a large irreducible part, hence the modest margin.
    assert fitted["after"] < 0.8 * fitted["before"]
    assert math.isfinite(fitted["trainer"].callback_metrics["train/loss"].item())


def test_ema_is_updated_every_optimiser_step_and_saved(fitted):
    module = fitted["module"]
    assert int(module.ema.num_updates) == fitted["trainer"].global_step == 150
    ema_w = module.ema.module.inp.weight
    assert not torch.equal(ema_w, module.denoiser.inp.weight)
    assert "ema.module.inp.weight" in module.state_dict()


def test_sample_uses_the_ema_weights(fitted):
    from polydiff.samplers import sample

    module = fitted["module"]
    start = module.schedule.prior((16, 2), generator=_gen(5))
    expected = sample(module.ema.module, module.schedule, start, sampler="dpmpp_2m", steps=5)
    assert torch.equal(module.sample(start), expected)
    assert not torch.equal(module.sample(start, use_ema=False), expected)


def test_validation_logs_loss_and_sample_metrics_reproducibly(fitted, tmp_path):
    module, data = fitted["module"], fitted["data"]
    metrics = module.val_metrics
    calls = metrics.calls
    trainer = _trainer(tmp_path, limit_val_batches=2)
    first = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert metrics.calls == calls + 1  # val_sample_batches=1 of the 2 batches is sampled
    assert {"val/loss", "val/mean_norm", "val/constant"} <= set(first)
    assert first["val/constant"] == 1.5
    second = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert second["val/loss"] == first["val/loss"]  # seeded: comparable across epochs
    assert second["val/mean_norm"] == first["val/mean_norm"]


def test_complex_states_give_a_real_loss_and_complex_samples():
    """Complex spectrograms (speech enhancement): the loss is |error|^2 and the prior is complex."""
    from polydiff.schedules import OUVEBridge

    class ComplexScore(Denoiser):
        def __init__(self):
            super().__init__("score")
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x, t, cond=None):
            return -self.scale * (x - cond)

    module = DiffusionModule(ComplexScore(), OUVEBridge(), loss_space="eps", ema_decay=0.0, sample_steps=3,
                             sampler="pc")
    y = torch.randn(4, 1, 8, 5, dtype=torch.complex64)
    x0 = torch.randn(4, 1, 8, 5, dtype=torch.complex64)
    loss = module.compute_loss({"x0": x0, "cond": y, "y": y}, generator=torch.Generator().manual_seed(0))
    assert not loss.is_complex() and torch.isfinite(loss)
    loss.backward()
    out = module.sample(y.shape, cond=y, y=y, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.complex64 and torch.isfinite(out).all()


def test_sampler_options_are_checked_and_reach_the_sampler():
    with pytest.raises(ValueError, match="has no option snr.*eta"):
        DiffusionModule(MLPDenoiser(), sampler="ddim", sampler_options={"snr": 0.5})
    deterministic = DiffusionModule(MLPDenoiser(), sampler="ddim", sample_steps=4)
    stochastic = DiffusionModule(MLPDenoiser(), sampler="ddim", sampler_options={"eta": 1.0}, sample_steps=4)
    stochastic.load_state_dict(deterministic.state_dict())
    start = torch.randn(16, 2)
    run = lambda m, **kw: m.sample(start, generator=torch.Generator().manual_seed(0), **kw)  # noqa: E731
    assert not torch.equal(run(deterministic), run(stochastic))
    # A per-call option overrides the configured one: eta = 0 makes the two modules agree.
    assert torch.equal(run(deterministic), run(stochastic, eta=0.0))


class _TimeProbe(nn.Module):
    """An eps-denoiser that records the times it is called with and predicts zero."""

    prediction = "eps"

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.times = None

    def forward(self, x, t, cond=None):
        self.times = t
        return x * self.w


def test_clean_known_entries_are_trained_at_time_zero_and_replace_ones_are_not():
    from polydiff.samplers import KnownValues

    x0 = torch.randn(8, 5, 3, generator=_gen(2))
    mask = torch.zeros(8, 5, 3, dtype=torch.bool)
    mask[:, :2] = True  # the first two frames are given
    for mode, zero_at_known in (("clean", True), ("replace", False)):
        probe = _TimeProbe()
        module = DiffusionModule(probe, schedule=VPLinear())
        module.compute_loss({"x0": x0, "known": KnownValues(x0, mask, mode=mode)}, generator=_gen(0))
        t = probe.times.reshape(*probe.times.shape, *([1] * (3 - probe.times.ndim))).expand(8, 5, 3)
        assert (t[~mask] > 0).all()
        assert bool((t[mask] == 0).all()) is zero_at_known


def test_record_init_arg_writes_into_the_recorded_model_config():
    flat = {"polydiff": {"model_config": {"denoiser": {"class_path": "x"}}}}
    DiffusionModule.record_init_arg(flat, "data_info", {"n": 3, "names": ("a", "b")})
    assert flat["polydiff"]["model_config"] == {"denoiser": {"class_path": "x"}, "data_info": {"n": 3, "names": ["a", "b"]}}
    nested = {"polydiff": {"model_config": {"class_path": "m.M", "init_args": {"lr": 1}}}}
    DiffusionModule.record_init_arg(nested, "data_info", {"n": 3})
    assert nested["polydiff"]["model_config"] == {"class_path": "m.M", "init_args": {"lr": 1, "data_info": {"n": 3}}}
    bare = {"polydiff": {"model_config": None}}
    DiffusionModule.record_init_arg(bare, "data_info", {"n": 3})
    assert bare["polydiff"]["model_config"] is None
    with pytest.raises(TypeError, match="data_info"):
        DiffusionModule.record_init_arg(nested, "data_info", object())


def test_datamodule_info_without_a_trainer_is_none():
    module = DiffusionModule(MLPDenoiser(dim=2))
    assert module.datamodule_info() is None


def test_rebuild_ema_copies_the_current_network_with_the_same_settings():
    module = DiffusionModule(MLPDenoiser(dim=2), ema_decay=0.9)
    with torch.no_grad():
        for p in module.denoiser.parameters():
            p.add_(1.0)
    before = module.ema
    module.rebuild_ema()
    assert module.ema is not before and module.ema.decay == 0.9 and module.ema.warmup == before.warmup
    assert int(module.ema.num_updates) == 0
    for a, b in zip(module.ema.module.parameters(), module.denoiser.parameters()):
        assert torch.equal(a, b)


# --- the data description handshake ---------------------------------------------------------------
class _Described(DiffusionModule):
    data_key = "toy"
    data_matching = ("dim",)

    def __init__(self, data_info: dict | None = None):
        super().__init__(MLPDenoiser(dim=2, hidden=8))
        self.configured = 0
        if data_info is not None:
            self.configure_data(data_info)

    def configure_data(self, info):
        if "dim" not in info:
            raise ValueError("no dim")
        self.configured += 1
        self.data_info = dict(info)


def test_data_description_from_the_data_module_into_checkpoints_and_back():
    module = _Described()
    with pytest.raises(RuntimeError, match="_Described has no data description yet"):
        module.require_info()
    module.datamodule_info = lambda: {"dim": 2, "scale": [1.0, 2.0]}
    module.setup("fit")
    assert module.require_info() == {"dim": 2, "scale": [1.0, 2.0]} and module.configured == 1
    module.setup("validate")  # already described: only checked, not taken again
    assert module.configured == 1
    module.datamodule_info = lambda: {"dim": 3, "scale": [1.0, 2.0]}
    with pytest.raises(ValueError, match="the data's dim 3 differs from the model's 2"):
        module.setup("fit")

    checkpoint = {}
    module.polydiff_config = {"class_path": "x._Described", "init_args": {}}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["toy"] == {"dim": 2, "scale": [1.0, 2.0]}
    assert checkpoint["polydiff"]["model_config"]["init_args"]["data_info"] == {"dim": 2, "scale": [1.0, 2.0]}

    fresh = _Described()
    fresh.on_load_checkpoint(checkpoint)
    assert fresh.require_info() == {"dim": 2, "scale": [1.0, 2.0]} and fresh.configured == 1


def test_modules_without_a_data_key_ignore_the_handshake():
    module = DiffusionModule(MLPDenoiser(dim=2, hidden=8))
    module.datamodule_info = lambda: {"dim": 2}
    module.setup("fit")
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    module.on_load_checkpoint({"toy": {"dim": 2}})
    assert module.data_info is None and set(checkpoint) == {"polydiff"}
