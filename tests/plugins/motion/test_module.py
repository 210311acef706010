"""MotionDiffusion: the loss (core part and geometric terms), training, generation, checkpoints.

Batches and the data description are written by hand. The geometric terms are checked on a
static pose (root still, every foot planted), whose positions, velocities and foot motion are
known: a denoiser that returns the clean motion exactly must have all three terms zero, and a
change to one valid frame must make them positive while a change to padded frames must not.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("pytorch_lightning")

from torch import nn  # noqa: E402

from polydiff.checkpoint import load_module  # noqa: E402
from polydiff.denoiser import Denoiser  # noqa: E402
from polydiff.module import DiffusionModule  # noqa: E402
from polydiff_motion.features import FOOT_CONTACT, RIC, ROOT_Y  # noqa: E402
from polydiff_motion.module import MotionDiffusion  # noqa: E402
from polydiff_motion.nets import MotionTransformer  # noqa: E402

D, T = 8, 12
INFO = {"feature_dim": 263, "fps": 20, "max_frames": 16, "min_frames": 4, "text_dim": D, "text_encoder": "fake",
        "mean": [0.1 * (i % 5) for i in range(263)], "std": [1.0 + 0.5 * (i % 3) for i in range(263)],
        "dataset": "hand-made"}
NET = {"dim": 32, "layers": 1, "heads": 2, "ff": 64, "dropout": 0.0, "text_dim": D, "max_frames": 16}
GEOMETRY = {"position_weight": 1.0, "velocity_weight": 0.5, "foot_contact_weight": 2.0}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def static_batch() -> dict:
    """Two still poses (root velocities zero, all feet in contact), the second padded after 7 frames."""
    g = _gen(3)
    raw = torch.zeros(2, T, 263)
    raw[:, :, ROOT_Y] = 0.9
    raw[:, :, RIC] = torch.randn(2, 1, RIC.stop - RIC.start, generator=g)
    raw[:, :, FOOT_CONTACT] = 1.0
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, 7:] = False
    mean, std = torch.tensor(INFO["mean"]), torch.tensor(INFO["std"])
    x0 = torch.where(mask[..., None], (raw - mean) / std, torch.zeros(()))
    return {"x0": x0, "mask": mask, "length": mask.sum(1), "text": torch.randn(2, D, generator=g),
            "caption": ["stand", "stand still"]}


class Oracle(Denoiser):
    """Predicts a stored clean motion whatever it is given."""

    def __init__(self, x0: torch.Tensor):
        super().__init__(prediction="x0")
        self.register_buffer("x0", x0.clone())
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x, t, cond=None):
        return self.x0 * self.scale


def tiny_module(**kw) -> MotionDiffusion:
    torch.manual_seed(0)
    return MotionDiffusion(MotionTransformer(**NET), data_info=INFO, **kw)


def test_loss_without_geometry_is_the_core_loss():
    parts_module = tiny_module(cond_dropout=0.3).eval()
    parts = parts_module.unpack_batch(static_batch())
    assert parts["loss_mask"] is parts["cond"]["mask"]
    ours = parts_module.compute_loss(parts, generator=_gen(5))
    core = DiffusionModule.compute_loss(parts_module, parts, generator=_gen(5))
    assert torch.equal(ours, core)
    # With weights the difference is exactly the weighted terms of the same prediction.
    geo = tiny_module(cond_dropout=0.3, **GEOMETRY).eval()
    total = geo.compute_loss(parts, generator=_gen(5))
    terms = geo.last_geometric
    extra = sum(GEOMETRY[f"{k}_weight"] * terms[k] for k in ("position", "velocity", "foot_contact"))
    assert torch.allclose(total, core + extra, rtol=1e-6)
    assert all(float(v) > 0 for v in terms.values())


def test_geometric_terms_vanish_on_the_exact_prediction_and_see_only_valid_frames():
    b = static_batch()
    module = MotionDiffusion(Oracle(b["x0"]), data_info=INFO, **GEOMETRY)
    parts = module.unpack_batch(b)
    loss = module.compute_loss(parts, generator=_gen(0))
    # Zero up to the rounding of normalising and denormalising.
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-10)
    assert all(float(v) == pytest.approx(0.0, abs=1e-10) for v in module.last_geometric.values())

    x0, mask = b["x0"], b["mask"]
    padded = x0.clone()
    padded[1, 8:] += 3.0
    exact = module.geometric_losses(x0, x0, mask)
    assert module.geometric_losses(padded, x0, mask) == exact
    moved = x0.clone()
    moved[1, 4, RIC] += 0.5  # one valid frame's pose: its joints jump away and back
    terms = module.geometric_losses(moved, x0, mask)
    assert all(float(v) > 0 for v in terms.values())
    # Foot loss by hand: only the moved frame's feet move, on the steps 3->4 and 4->5.
    from polydiff_motion.features import features_to_positions
    from polydiff_motion.skeleton import FOOT_JOINTS

    pos = features_to_positions(module.denormalize(moved))[1]
    step = (pos[1:] - pos[:-1])[:, list(FOOT_JOINTS)].square().sum(-1)
    pairs = 11 + 6
    assert float(terms["foot_contact"]) == pytest.approx(float(step[3:5].sum()) / (pairs * 4), rel=1e-5)


def test_loss_decreases_on_a_tiny_batch():
    torch.set_num_threads(1)
    module = tiny_module(cond_dropout=0.0, **GEOMETRY)
    parts = module.unpack_batch(static_batch())
    before = float(module.compute_loss(parts, generator=_gen(9)).detach())
    optimizer = torch.optim.Adam(module.denoiser.parameters(), lr=3e-3)
    for step in range(30):
        optimizer.zero_grad()
        module.compute_loss(parts, generator=_gen(100 + step)).backward()
        optimizer.step()
    after = float(module.compute_loss(parts, generator=_gen(9)).detach())
    assert after < 0.5 * before


def test_generate_shape_zero_padding_and_positions():
    module = tiny_module().eval()
    lengths = torch.tensor([5, 9, 3])
    motion = module.generate(torch.randn(3, D), lengths, steps=3, generator=_gen(1))
    assert motion.shape == (3, 9, 263)
    for i, n in enumerate(lengths.tolist()):
        assert not motion[i, n:].any() and motion[i, :n].abs().sum() > 0
    positions = module.to_positions(motion, lengths)
    assert positions.shape == (3, 9, 22, 3) and not positions[0, 5:].any() and positions[0, :5].abs().sum() > 0
    with pytest.raises(ValueError, match="lengths"):
        module.generate(torch.randn(1, D), torch.tensor([17]), steps=2)
    with pytest.raises(RuntimeError, match="data description"):
        MotionDiffusion(MotionTransformer(**NET)).generate(torch.randn(1, D), torch.tensor([4]))


def test_data_info_must_fit_the_network():
    with pytest.raises(ValueError, match="text_dim"):
        MotionDiffusion(MotionTransformer(**{**NET, "text_dim": D + 1}), data_info=INFO)
    with pytest.raises(ValueError, match="up to 16 frames"):
        MotionDiffusion(MotionTransformer(**{**NET, "max_frames": 8}), data_info=INFO)


class FakeMotionData(pl.LightningDataModule):
    def __init__(self):
        super().__init__()
        b = static_batch()
        self.items = [{k: v[i] for k, v in b.items()} for i in range(2)] * 2

    def info(self) -> dict:
        return dict(INFO)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.items, batch_size=2)


CONFIG = {"class_path": "polydiff_motion.module.MotionDiffusion",
          "init_args": {"denoiser": {"class_path": "polydiff_motion.nets.MotionTransformer", "init_args": NET},
                        "sample_steps": 4, **GEOMETRY}}


def test_checkpoint_round_trip_reproduces_generation(tmp_path):
    from jsonargparse import ArgumentParser

    torch.set_num_threads(1)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=MotionDiffusion)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    pl.seed_everything(0, verbose=False)
    module = instantiate(parser.parse_object({"model": CONFIG})).model
    module.polydiff_config = CONFIG  # as the CLI records it
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=FakeMotionData())
    assert module.data_info == INFO and int(module.ema.num_updates) == 2
    path = tmp_path / "motion.ckpt"
    trainer.save_checkpoint(path)
    record = torch.load(path, weights_only=True)
    assert record["motion"] == INFO and record["polydiff"]["model_config"]["init_args"]["data_info"] == INFO

    loaded = load_module(path, expect=MotionDiffusion, require=("motion",), allowed_prefixes=("polydiff_motion",))
    assert type(loaded) is MotionDiffusion and loaded.data_info == INFO
    text, lengths = torch.randn(2, D, generator=_gen(4)), torch.tensor([6, 10])
    module.eval()
    a = module.generate(text, lengths, generator=_gen(7))
    b = loaded.generate(text, lengths, generator=_gen(7))
    assert torch.equal(a, b)
