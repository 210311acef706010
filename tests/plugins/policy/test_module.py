"""DiffusionPolicy and the regression baseline: data description, normalisation, loss, inference, checkpoints.

The data description is written by hand (agent position and block pose, 2-d actions, horizon 8),
so the network sizes and normalisers are known in advance. Two denoisers with a closed form make
the inference exact: a point mass (it predicts the same clean chunk whatever it sees, so every
sampler must return that chunk) and ``x0 = x / alpha(t)`` (whose probability-flow ODE keeps
``x / alpha`` constant, so a warm start comes back as exactly its re-noised value divided by
alpha). One tiny U-Net (widths 8 and 16) is fitted for four steps with a Lightning Trainer on
three hand-made episodes, and its checkpoint is reloaded with
:func:`polydiff_policy.commands.load_policy`.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("pytorch_lightning")
from torch import nn  # noqa: E402

from polydiff.checkpoint import CheckpointError  # noqa: E402
from polydiff.schedules import VPCosine  # noqa: E402
from polydiff_policy.commands import load_policy  # noqa: E402
from polydiff_policy.data import Normalizer, PolicyDataModule  # noqa: E402
from polydiff_policy.episodes import Episode  # noqa: E402
from polydiff_policy.module import (  # noqa: E402
    ENV_ID,
    ActionError,
    DiffusionPolicy,
    MLPActionHead,
    RegressionPolicy,
    check_data_info,
)
from polydiff_policy.nets import ConditionalUnet1D, PolicyDenoiser  # noqa: E402

A, TO, H, NA = 2, 2, 8, 4  # action dim, obs horizon, horizon, action horizon
OBS_NORM = Normalizer([0.0, 0.0, 100.0, 50.0, 0.0], [512.0, 512.0, 300.0, 450.0, 2 * math.pi])
ACT_NORM = Normalizer([10.0, 20.0], [500.0, 480.0])
INFO = {
    "env": ENV_ID,
    "obs_features": ["agent_pos", "block_pose"],
    "obs_dims": [2, 3],
    "image_feature": None,
    "image_shape": None,
    "action_dim": A,
    "obs_horizon": TO,
    "horizon": H,
    "action_horizon": NA,
    "fps": 10,
    "obs_normalizer": OBS_NORM.state_dict(),
    "action_normalizer": ACT_NORM.state_dict(),
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_unet() -> ConditionalUnet1D:
    return ConditionalUnet1D(down_dims=[8, 16], kernel_size=3, groups=4, time_dim=8)


def make_policy(seed: int = 0, denoiser: PolicyDenoiser | None = None, **kw) -> DiffusionPolicy:
    torch.manual_seed(seed)
    kw.setdefault("sample_steps", 3)
    net = denoiser if denoiser is not None else tiny_unet()
    return DiffusionPolicy(net, data_info=copy.deepcopy(INFO), **kw).eval()


def raw_obs(batch: int = 3, seed: int = 1) -> torch.Tensor:
    """Raw observation histories inside the normaliser's range, (B, TO, 5)."""
    u = torch.rand(batch, TO, 5, generator=_gen(seed), dtype=torch.float64)
    return torch.as_tensor(OBS_NORM.low + u.numpy() * (OBS_NORM.high - OBS_NORM.low), dtype=torch.float32)


class ExactDenoiser(PolicyDenoiser):
    """An x0 predictor with a closed form: ``value`` (a point mass at that chunk, in network units)
    or, with ``value=None``, ``x / alpha(t)`` under ``schedule``."""

    def __init__(self, value: list | None = None, schedule: VPCosine | None = None):
        super().__init__(prediction="x0")
        self.value, self.schedule = value, schedule
        self.seen: list = []
        self.times: list[float] = []

    def _build(self, frame_features: int) -> None:
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, cond=None):
        self.seen.append(self.encode_obs(cond))
        self.times.append(float(torch.as_tensor(t).reshape(-1)[0]))
        if self.value is not None:
            return torch.as_tensor(self.value, dtype=x.dtype).expand_as(x) + 0 * self.dummy
        alpha = self.schedule.alpha(torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1, 1))
        return (x / alpha).to(x.dtype)


POINT = (torch.linspace(-0.9, 0.9, H * A).reshape(H, A) * torch.tensor([1.0, -1.0])).tolist()


# --- the data description -------------------------------------------------------------------------
def test_configure_data_builds_the_network_and_normalisers():
    policy = DiffusionPolicy(tiny_unet())
    with pytest.raises(RuntimeError, match="no data description yet"):
        policy.require_info()
    with pytest.raises(RuntimeError, match="no data description yet"):
        policy.horizon  # noqa: B018
    policy.configure_data(INFO)
    net = policy.denoiser
    assert net.built and (net.action_dim, net.obs_dim, net.obs_horizon, net.horizon) == (A, 5, TO, H)
    assert (policy.obs_horizon, policy.horizon, policy.action_horizon, policy.action_dim) == (TO, H, NA, A)
    np.testing.assert_allclose(policy.obs_scale.numpy(), OBS_NORM.scale, rtol=1e-6)
    np.testing.assert_allclose(policy.obs_offset.numpy(), OBS_NORM.offset, rtol=1e-6)
    np.testing.assert_allclose(policy.action_scale.numpy(), ACT_NORM.scale, rtol=1e-6)
    np.testing.assert_allclose(policy.action_offset.numpy(), ACT_NORM.offset, rtol=1e-6)
    # The normalisers live in data_info, not in the weights.
    assert not any("scale" in k or "offset" in k for k in policy.state_dict())
    # The EMA tracks the built network.
    assert policy.ema.module.state_dict().keys() == net.state_dict().keys()
    assert isinstance(policy.val_metrics, ActionError)
    assert (policy.val_metrics.obs_horizon, policy.val_metrics.action_horizon) == (TO, NA)


def test_data_info_given_to_the_constructor_builds_at_once():
    policy = make_policy()
    assert policy.data_info == INFO and policy.denoiser.built
    assert sum(p.numel() for p in policy.denoiser.parameters()) > 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i: i.pop("action_normalizer"), "lacks the fields action_normalizer"),
        (lambda i: (i.pop("horizon"), i.pop("obs_dims")), "lacks the fields obs_dims, horizon"),
        (lambda i: i.update(obs_dims=[2]), "obs_features and obs_dims differ in length"),
        (lambda i: i.update(action_horizon=8),
         r"action horizon 8 must lie in \[1, horizon - obs_horizon \+ 1\] = \[1, 7\]"),
        (lambda i: i.update(action_horizon=0), r"action horizon 0 must lie in"),
    ],
    ids=["missing", "two-missing", "dims", "too-long", "zero"],
)
def test_check_data_info_names_the_problem(change, message):
    info = copy.deepcopy(INFO)
    change(info)
    with pytest.raises(ValueError, match=message):
        check_data_info(info)
    with pytest.raises(ValueError, match=message):
        DiffusionPolicy(tiny_unet(), data_info=info)


def test_check_data_info_needs_a_mapping():
    with pytest.raises(ValueError, match="must be a mapping, got list"):
        check_data_info([1, 2])


def test_only_policy_denoisers_are_accepted():
    with pytest.raises(TypeError, match="PolicyDenoiser, got Linear"):
        DiffusionPolicy(nn.Linear(2, 2))


def test_setup_takes_the_data_description_or_checks_it():
    class FakeData:
        def __init__(self, info):
            self._info = info

        def info(self):
            return self._info

    policy = DiffusionPolicy(tiny_unet())
    policy._trainer = SimpleNamespace(datamodule=FakeData(copy.deepcopy(INFO)))
    policy.setup("fit")
    assert policy.data_info == INFO and policy.denoiser.built
    other = copy.deepcopy(INFO)
    other["obs_dims"] = [2, 4]
    policy._trainer = SimpleNamespace(datamodule=FakeData(other))
    with pytest.raises(ValueError, match=r"the data's obs_dims \[2, 4\] differs from the model's \[2, 3\]"):
        policy.setup("fit")
    # Normalisers may differ (fine-tuning on more data); only the shapes must match.
    same_shape = copy.deepcopy(INFO)
    same_shape["action_normalizer"] = Normalizer([0.0, 0.0], [1.0, 1.0]).state_dict()
    policy._trainer = SimpleNamespace(datamodule=FakeData(same_shape))
    policy.setup("fit")


# --- normalisation ------------------------------------------------------------------------------------
def test_normalisation_matches_the_data_normaliser_and_round_trips():
    policy = make_policy()
    obs = raw_obs(4)
    np.testing.assert_allclose(policy.normalize_obs(obs).numpy(), OBS_NORM.normalize(obs.double().numpy()), rtol=1e-5,
                               atol=1e-5)
    actions = torch.tensor([[10.0, 20.0], [500.0, 480.0], [255.0, 250.0]])
    normed = policy.normalize_actions(actions)
    torch.testing.assert_close(normed, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]), atol=1e-6, rtol=0)
    np.testing.assert_allclose(normed.numpy(), ACT_NORM.normalize(actions.double().numpy()), atol=1e-6)
    torch.testing.assert_close(policy.unnormalize_actions(normed), actions)
    np.testing.assert_allclose(policy.unnormalize_actions(torch.tensor([[0.5, -0.5]])).numpy(),
                               ACT_NORM.unnormalize(np.array([[0.5, -0.5]])), rtol=1e-6)


def test_condition_is_the_normalised_history():
    policy = make_policy()
    obs = raw_obs(2)
    torch.testing.assert_close(policy.condition(obs), policy.normalize_obs(obs))


def test_unpack_batch():
    policy = make_policy()
    batch = {"obs": torch.zeros(2, TO, 5), "action": torch.ones(2, H, A)}
    parts = policy.unpack_batch(batch)
    assert parts["x0"] is batch["action"] and parts["cond"] == {"obs": batch["obs"]}
    assert parts["y"] is parts["loss_mask"] is parts["known"] is None
    image = torch.zeros(2, TO, 3, 4, 4)
    assert policy.unpack_batch({**batch, "image": image})["cond"]["image"] is image
    with pytest.raises(TypeError, match="mapping with 'obs' and 'action'"):
        policy.unpack_batch({"x0": batch["action"]})


def test_action_error_by_hand():
    x0 = torch.zeros(1, 4, 1)
    samples = torch.tensor([[[1.0], [2.0], [3.0], [4.0]]])
    metrics = ActionError(obs_horizon=2, action_horizon=2)(samples, {"x0": x0})
    assert float(metrics["action_mse"]) == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert float(metrics["executed_mse"]) == pytest.approx((4 + 9) / 2)  # frames 1 and 2


# --- the loss -----------------------------------------------------------------------------------------
def test_training_loss_decreases_on_a_tiny_dataset():
    policy = make_policy(ema_decay=0.0)
    policy.train()
    gen = _gen(0)
    obs = torch.rand(32, TO, 5, generator=gen) * 2 - 1
    # Actions a smooth function of the observations, in network units.
    steps = torch.linspace(0, 1, H)[None, :, None]
    action = torch.tanh(obs[:, -1:, :A] + steps * obs[:, -1:, A:A + 2])
    batch = policy.unpack_batch({"obs": obs, "action": action})

    def loss():
        with torch.no_grad():
            return float(policy.compute_loss(batch, generator=_gen(123)))

    before = loss()
    optimizer = torch.optim.Adam(policy.denoiser.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        policy.compute_loss(batch).backward()
        optimizer.step()
    after = loss()
    assert after < 0.6 * before, (before, after)


def test_the_loss_is_the_eps_mse_by_hand():
    policy = make_policy()
    batch = policy.unpack_batch({"obs": torch.rand(4, TO, 5, generator=_gen(1)),
                                 "action": torch.rand(4, H, A, generator=_gen(2))})
    loss = policy.compute_loss(batch, generator=_gen(5))
    gen = _gen(5)
    t = policy.schedule.sample_t(4, generator=gen)
    eps = torch.randn(4, H, A, generator=gen)
    x_t = policy.schedule.corrupt(batch["x0"], t, eps)
    with torch.no_grad():
        expected = (policy.denoiser(x_t, t, batch["cond"]) - eps).square().mean()
    torch.testing.assert_close(loss.detach(), expected)


# --- inference ----------------------------------------------------------------------------------------
def test_predict_chunk_is_reproducible_with_a_seeded_generator():
    policy = make_policy()
    obs = raw_obs(3)
    a = policy.predict_chunk(obs, generator=_gen(7))
    b = policy.predict_chunk(obs, generator=_gen(7))
    assert a.shape == (3, H, A) and torch.equal(a, b)
    assert not torch.allclose(a, policy.predict_chunk(obs, generator=_gen(8)))
    # Environment units are the network's unnormalised.
    normed = policy.predict_chunk(obs, generator=_gen(7), normalized=True)
    torch.testing.assert_close(policy.unnormalize_actions(normed), a)
    start = torch.zeros(3, H, A)
    w1 = policy.predict_chunk(obs, start=start, t_start=0.5, steps=2, generator=_gen(9))
    w2 = policy.predict_chunk(obs, start=start, t_start=0.5, steps=2, generator=_gen(9))
    assert torch.equal(w1, w2)


@pytest.mark.parametrize("sampler, steps", [("ddim", 1), ("ddim", 4), ("ddpm", 5)])
def test_a_point_mass_is_sampled_exactly(sampler, steps):
    policy = make_policy(denoiser=ExactDenoiser(POINT))
    obs = raw_obs(2)
    chunk = policy.predict_chunk(obs, sampler=sampler, steps=steps, generator=_gen(0), normalized=True)
    torch.testing.assert_close(chunk, torch.tensor(POINT).expand(2, H, A), atol=1e-5, rtol=0)
    raw = policy.predict_chunk(obs, sampler=sampler, steps=steps, generator=_gen(0))
    np.testing.assert_allclose(raw.numpy(), ACT_NORM.unnormalize(np.array(POINT))[None].repeat(2, 0), atol=1e-3)
    # From any warm start, at any re-noising time.
    warm = policy.predict_chunk(obs, start=torch.randn(2, H, A, generator=_gen(1)), t_start=0.3, steps=2,
                                generator=_gen(0), normalized=True)
    torch.testing.assert_close(warm, torch.tensor(POINT).expand(2, H, A), atol=1e-5, rtol=0)
    # The network was conditioned on the normalised history.
    torch.testing.assert_close(policy.denoiser.seen[-1], policy.normalize_obs(obs))


@pytest.mark.parametrize("t_start, steps", [(0.05, 1), (0.3, 2), (0.9946, 5)])
def test_warm_start_is_renoised_to_t_start_and_denoised_to_zero(t_start, steps):
    """With x0 = x / alpha(t) every DDIM step keeps x / alpha, so the chunk is the re-noised start
    divided by alpha: start + sigma(t_start) / alpha(t_start) * noise, the noise drawn first."""
    schedule = VPCosine()
    policy = make_policy(denoiser=ExactDenoiser(schedule=schedule), schedule=schedule)
    start = torch.rand(2, H, A, generator=_gen(3)) * 2 - 1
    chunk = policy.predict_chunk(raw_obs(2), start=start, t_start=t_start, steps=steps, generator=_gen(4),
                                 normalized=True)
    t = torch.tensor(t_start, dtype=torch.float64)
    noise = torch.randn(2, H, A, generator=_gen(4))
    expected = start + float(schedule.sigma(t) / schedule.alpha(t)) * noise
    torch.testing.assert_close(chunk, expected, atol=1e-4, rtol=1e-4)
    # One evaluation per step, on the uniform grid from t_start down to 0.
    expected_times = [t_start * (1 - k / steps) for k in range(steps)]
    assert policy.denoiser.times == pytest.approx(expected_times, rel=1e-5)


def test_warm_start_with_a_tiny_t_start_stays_near_the_start():
    policy = make_policy()
    obs = raw_obs(3)
    start = torch.rand(3, H, A, generator=_gen(3)) * 2 - 1
    near = policy.predict_chunk(obs, start=start, t_start=1e-3, steps=1, generator=_gen(4), normalized=True)
    assert (near - start).abs().max() < 0.1
    far = policy.predict_chunk(obs, start=start, t_start=policy.schedule.t_max, steps=1, generator=_gen(4),
                               normalized=True)
    assert (far - start).abs().max() > 0.5


@pytest.mark.parametrize("t_start", [None, 0.0, -0.1, 1.5])
def test_warm_start_needs_a_valid_t_start(t_start):
    policy = make_policy()
    with pytest.raises(ValueError, match=r"a warm start needs t_start in \(0, 0.9946\]"):
        policy.predict_chunk(raw_obs(1), start=torch.zeros(1, H, A), t_start=t_start)


# --- checkpoints --------------------------------------------------------------------------------------
CONFIG = {
    "class_path": "polydiff_policy.module.DiffusionPolicy",
    "init_args": {
        "denoiser": {"class_path": "polydiff_policy.nets.ConditionalUnet1D",
                     "init_args": {"down_dims": [8, 16], "kernel_size": 3, "groups": 4, "time_dim": 8}},
        "ema_decay": 0.9,
        "sample_steps": 3,
        "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
    },
}


def synthetic_episode(length: int, seed: int) -> Episode:
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float32)[:, None]
    agent = 200 + 40 * np.c_[np.sin(t / 5 + seed), np.cos(t / 7)] + rng.normal(0, 1, (length, 2))
    env_state = 250 + 30 * np.sin(t / 9 + np.arange(16)) + rng.normal(0, 1, (length, 16))
    actions = agent + 10 * np.c_[np.cos(t / 4), np.sin(t / 4)]
    return Episode({"agent_pos": agent.astype(np.float32), "environment_state": env_state.astype(np.float32)},
                   actions.astype(np.float32), success=True, max_coverage=0.96, seed=seed)


def _build(config: dict) -> DiffusionPolicy:
    """What the CLI does: instantiate from the config and record it."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=DiffusionPolicy)
    parsed = parser.parse_object({"model": config})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    module = instantiate(parsed).model
    module.polydiff_config = config
    module.plugin_name = "policy"
    return module


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny policy fitted 4 steps by a Trainer on three hand-made episodes, and its checkpoint."""
    from polydiff_policy.formats import write_lerobot

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("policy-ckpt")
    data = write_lerobot(root / "demo", [synthetic_episode(n, s) for s, n in enumerate((40, 30, 35))])
    dm = PolicyDataModule(str(data), obs_features=["agent_pos", "environment_state"], obs_horizon=TO, horizon=H,
                          action_horizon=NA, batch_size=8, val_episodes=1)
    pl.seed_everything(0, verbose=False)
    module = _build(CONFIG)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=4, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, val_check_interval=4,
                         limit_val_batches=1, enable_checkpointing=False)
    trainer.fit(module, datamodule=dm)
    path = root / "policy.ckpt"
    trainer.save_checkpoint(path)
    return {"module": module.eval(), "path": path, "info": dm.info(), "trainer": trainer, "root": root}


def _resave(fitted, tmp_path, name: str, edit):
    checkpoint = torch.load(fitted["path"], weights_only=True)
    edit(checkpoint)
    path = tmp_path / name
    torch.save(checkpoint, path)
    return path


def test_fit_takes_the_data_description_and_validates_with_samples(fitted):
    module, info = fitted["module"], fitted["info"]
    assert module.data_info == info and module.denoiser.obs_dim == 18
    assert int(module.ema.num_updates) == 4
    metrics = fitted["trainer"].callback_metrics
    assert {"val/loss", "val/action_mse", "val/executed_mse"} <= set(metrics)


def test_checkpoint_records_the_data_description(fitted):
    checkpoint = torch.load(fitted["path"], weights_only=True)
    assert checkpoint["policy"] == fitted["info"]
    meta = checkpoint["polydiff"]
    assert meta["plugin"] == "policy" and meta["module_class"] == "polydiff_policy.module.DiffusionPolicy"
    assert meta["model_config"]["init_args"]["data_info"] == fitted["info"]
    assert meta["model_config"]["init_args"]["denoiser"] == CONFIG["init_args"]["denoiser"]
    # The module's own config is left as it was.
    assert "data_info" not in fitted["module"].polydiff_config["init_args"]


def test_on_save_checkpoint_with_a_flat_config():
    policy = make_policy()
    policy.polydiff_config = {"denoiser": CONFIG["init_args"]["denoiser"]}
    record: dict = {}
    policy.on_save_checkpoint(record)
    assert record["polydiff"]["model_config"] == {"denoiser": CONFIG["init_args"]["denoiser"], "data_info": INFO}
    assert record["policy"] == INFO


def test_load_policy_gives_identical_chunks(fitted):
    original = fitted["module"]
    loaded = load_policy(fitted["path"])
    assert type(loaded) is DiffusionPolicy and not loaded.training
    assert loaded.data_info == fitted["info"] and loaded.plugin_name == "policy"
    frames = synthetic_episode(12, 9).observations
    obs = torch.as_tensor(np.concatenate([frames["agent_pos"], frames["environment_state"]], axis=1)[None, :TO])
    a = original.predict_chunk(obs, generator=_gen(11))
    b = loaded.predict_chunk(obs, generator=_gen(11))
    assert a.shape == (1, H, A) and torch.equal(a, b)
    start = torch.zeros(1, H, A)
    torch.testing.assert_close(original.predict_chunk(obs, start=start, t_start=0.4, steps=2, generator=_gen(1)),
                               loaded.predict_chunk(obs, start=start, t_start=0.4, steps=2, generator=_gen(1)),
                               rtol=0, atol=0)
    torch.testing.assert_close(loaded.action_scale, original.action_scale)


def test_load_policy_refuses_another_plugins_checkpoint(fitted, tmp_path):
    path = _resave(fitted, tmp_path, "series.ckpt", lambda c: c["polydiff"].update(plugin="timeseries"))
    with pytest.raises(CheckpointError, match="series.ckpt is a checkpoint of plugin 'timeseries', not 'policy'"):
        load_policy(path)


def test_load_policy_refuses_a_non_checkpoint(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("not weights\n")
    with pytest.raises(CheckpointError, match="notes.ckpt is not a torch checkpoint"):
        load_policy(path)
    with pytest.raises(CheckpointError, match="missing.ckpt: no such checkpoint file"):
        load_policy(tmp_path / "missing.ckpt")


def test_load_policy_refuses_another_environment(fitted, tmp_path):
    def edit(checkpoint):
        checkpoint["policy"]["env"] = "gym_aloha/AlohaInsertion-v0"
        checkpoint["polydiff"]["model_config"]["init_args"]["data_info"]["env"] = "gym_aloha/AlohaInsertion-v0"

    path = _resave(fitted, tmp_path, "aloha.ckpt", edit)
    expected = ("aloha.ckpt is a policy for the environment 'gym_aloha/AlohaInsertion-v0'; rollouts here run "
                "'gym_pusht/PushT-v0'")
    with pytest.raises(CheckpointError, match=expected):
        load_policy(path)


def test_load_policy_refuses_a_checkpoint_without_the_policy_record(fitted, tmp_path):
    path = _resave(fitted, tmp_path, "bare.ckpt", lambda c: c.pop("policy"))
    with pytest.raises(CheckpointError, match="bare.ckpt has no 'policy' record, so it was not written by the policy "
                                              "plugin's training"):
        load_policy(path)


def test_load_policy_refuses_a_module_that_is_not_a_policy(fitted, tmp_path):
    def edit(checkpoint):
        checkpoint["polydiff"]["module_class"] = "polydiff.module.DiffusionModule"
        checkpoint["polydiff"]["model_config"]["class_path"] = "polydiff.module.DiffusionModule"

    path = _resave(fitted, tmp_path, "core.ckpt", edit)
    with pytest.raises(CheckpointError, match="core.ckpt holds a DiffusionModule, not a DiffusionPolicy"):
        load_policy(path)


# --- the regression baseline --------------------------------------------------------------------------
def make_regression(seed: int = 0) -> RegressionPolicy:
    torch.manual_seed(seed)
    return RegressionPolicy(MLPActionHead(hidden=[16]), data_info=copy.deepcopy(INFO)).eval()


def test_regression_loss_is_the_plain_mse():
    policy = make_regression()
    obs = torch.rand(4, TO, 5, generator=_gen(1)) * 2 - 1
    action = torch.rand(4, H, A, generator=_gen(2)) * 2 - 1
    batch = policy.unpack_batch({"obs": obs, "action": action})
    loss = policy.compute_loss(batch, generator=_gen(0))
    with torch.no_grad():
        predicted = policy.denoiser.mlp(obs.reshape(4, -1)).reshape(4, H, A)
    torch.testing.assert_close(loss.detach(), (predicted - action).square().mean())
    # No noise: the generator changes nothing.
    torch.testing.assert_close(policy.compute_loss(batch, generator=_gen(99)), loss)


def test_regression_predict_chunk_is_deterministic():
    policy = make_regression()
    obs = raw_obs(3)
    a = policy.predict_chunk(obs, generator=_gen(1), sampler="ddpm", steps=50)
    b = policy.predict_chunk(obs, generator=_gen(2))
    assert a.shape == (3, H, A) and torch.equal(a, b)
    with torch.no_grad():
        normed = policy.denoiser.mlp(policy.normalize_obs(obs).reshape(3, -1)).reshape(3, H, A)
    expected = policy.unnormalize_actions(normed)
    torch.testing.assert_close(a, expected)
    torch.testing.assert_close(policy.predict_chunk(obs, normalized=True), policy.normalize_actions(a), atol=1e-5,
                               rtol=0)
    # A warm start (RTI) changes nothing either.
    torch.testing.assert_close(policy.predict_chunk(obs, start=torch.ones(3, H, A), t_start=0.2), a)


def test_regression_trains_down():
    policy = make_regression()
    policy.train()
    obs = torch.rand(16, TO, 5, generator=_gen(1)) * 2 - 1
    action = torch.tanh(obs[:, -1:, :A].expand(16, H, A))
    batch = policy.unpack_batch({"obs": obs, "action": action})
    before = float(policy.compute_loss(batch).detach())
    optimizer = torch.optim.Adam(policy.denoiser.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        policy.compute_loss(batch).backward()
        optimizer.step()
    assert float(policy.compute_loss(batch).detach()) < 0.3 * before
