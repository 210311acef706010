"""Procedural textures, the texture data module, TextureUNet, the diffusers adapter and the config."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polydiff.module import DiffusionModule
from polydiff.samplers import sample as run_sampler
from polydiff.schedules import VPCosine, VPLinear
from polydiff_3d.images import (
    TEXTURE_LABELS,
    DiffusersUNet,
    TextureDataModule,
    TextureUNet,
    ddpm_alphas_cumprod,
    diffusers_timestep,
    make_texture,
    scan_textures,
    write_texture_collection,
)

CONFIG = Path(__file__).resolve().parents[3] / "plugins" / "3d" / "configs" / "texture.yaml"


def coherence(image: np.ndarray) -> float:
    """Anisotropy of the summed structure tensor: 1 for a pattern varying along one direction only."""
    gy, gx = np.gradient(image.mean(-1).astype(np.float64))
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    return float(np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy))


# --- procedural textures ----------------------------------------------------------------------------
def test_textures_are_deterministic_per_seed_and_in_range():
    for label in TEXTURE_LABELS:
        a = make_texture(label, 3, 32)
        assert a.shape == (32, 32, 3) and a.dtype == np.float32
        assert a.min() >= 0.0 and a.max() <= 1.0
        np.testing.assert_array_equal(a, make_texture(label, 3, 32))
        assert np.abs(a - make_texture(label, 4, 32)).max() > 0.05
        assert a.std() > 0.02  # two colours at least 0.5 apart: never a flat image


def test_texture_labels_differ_in_structure():
    # Stripes vary along one direction (structure tensor coherence near 1); checks and dots vary
    # equally along two perpendicular directions (coherence near 0).
    for seed in range(8):
        assert coherence(make_texture("stripes", seed, 64)) > 0.8
        assert coherence(make_texture("checks", seed, 64)) < 0.2
        assert coherence(make_texture("dots", seed, 64)) < 0.2
    # The same (label, seed) at another size is the same texture.
    big = make_texture("waves", 1, 64).reshape(32, 2, 32, 2, 3).mean((1, 3))
    assert np.abs(big - make_texture("waves", 1, 32)).mean() < 0.05
    # Different labels drawn with the same seed are different images.
    images = [make_texture(label, 0, 32) for label in TEXTURE_LABELS]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 0.02


def test_stripes_have_one_dominant_frequency():
    image = make_texture("stripes", 5, 64).mean(-1)
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    peak = np.unravel_index(np.argmax(power), power.shape)
    mirror = tuple((-np.array(peak)) % 64)
    # The fundamental and its mirror carry far more than any frequency off that line.
    fy, fx = np.fft.fftfreq(64)[:, None], np.fft.fftfreq(64)[None, :]
    direction = np.array([np.fft.fftfreq(64)[peak[0]], np.fft.fftfreq(64)[peak[1]]])
    direction /= np.linalg.norm(direction)
    off_line = np.abs(fy * -direction[1] + fx * direction[0]) > 3 / 64
    assert power[peak] == power[mirror]
    assert power[off_line].max() < 0.05 * power[peak]


def test_unknown_label_lists_the_valid_ones():
    with pytest.raises(ValueError, match="stripes, checks"):
        make_texture("plaid", 0)


# --- the collection ------------------------------------------------------------------------------
def test_collection_round_trip_and_refusal(tmp_path):
    root = tmp_path / "textures"
    written = write_texture_collection(root, 2, size=16, seed=1)
    assert scan_textures(root) == written
    assert len(written) == 2 * len(TEXTURE_LABELS)
    assert (root / "dots" / "dots_00001.png").is_file()
    label, path = written[0]
    pixels = np.asarray(Image.open(path), dtype=np.float32) / 255.0
    assert np.abs(pixels - make_texture(label, _seed_of(1, 0), 16)).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(FileExistsError, match="not empty"):
        write_texture_collection(root, 1, size=16)
    again = write_texture_collection(root, 1, size=16, seed=1, overwrite=True)
    assert scan_textures(root) == again and len(again) == len(TEXTURE_LABELS)


def _seed_of(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def test_data_module_skips_broken_images_and_names_them(tmp_path):
    root = tmp_path / "textures"
    write_texture_collection(root, 3, size=20)
    (root / "checks" / "checks_00001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(root / "dots" / "grey.png")
    data = TextureDataModule(str(root), size=16, batch_size=5, val_fraction=0.25, seed=0)
    with pytest.warns(UserWarning, match=r"skipped 2 of 19 images: checks/checks_00001.png \(cannot be read.*"
                                        r"dots/grey.png \(mode L, not RGB\)"):
        data.setup("fit")
    assert data.info() == {"labels": sorted(TEXTURE_LABELS), "size": 16, "channels": 3}
    assert len(data.train_set) + len(data.val_set) == 17 and len(data.val_set) == 4
    assert data.stored_side == 18
    batch = next(iter(data.train_dataloader()))
    assert batch["x0"].shape == (5, 3, 16, 16) and batch["x0"].dtype == torch.float32
    assert batch["x0"].min() >= -1.0 and batch["x0"].max() <= 1.0
    assert batch["cond"].dtype == torch.long and batch["cond"].shape == (5,)
    assert 0 <= int(batch["cond"].min()) and int(batch["cond"].max()) < len(TEXTURE_LABELS)
    # Validation items are the central crop, the same every time.
    val = next(iter(data.val_dataloader()))
    torch.testing.assert_close(val["x0"], next(iter(data.val_dataloader()))["x0"])


def test_data_module_serves_the_images_unchanged_without_augmentation(tmp_path):
    root = tmp_path / "textures"
    written = write_texture_collection(root, 1, size=16, seed=2)
    data = TextureDataModule(str(root), size=16, batch_size=8, val_fraction=0.0, augment=False)
    data.setup("fit")
    assert data.val_dataloader() == []
    assert [label for label, _ in written] == data.info()["labels"]  # one image per label, in label order
    for i in range(len(data.train_set)):
        item = data.train_set[i]
        _, path = written[int(item["cond"])]
        expected = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
        torch.testing.assert_close(item["x0"], expected)


def test_empty_collection_names_the_root(tmp_path):
    (tmp_path / "empty" / "stripes").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty"):
        TextureDataModule(str(tmp_path / "empty")).setup("fit")


# --- TextureUNet -------------------------------------------------------------------------------------
def test_texture_unet_shapes_and_the_null_class():
    torch.manual_seed(0)
    net = TextureUNet(num_labels=6, channels=8, channel_mult=(1, 2))
    x, t = torch.randn(3, 3, 16, 16), torch.rand(3)
    real = net(x, t, torch.tensor([0, 1, 2]))
    assert real.shape == x.shape
    null = net(x, t, torch.full((3,), 6))
    assert (real - null).abs().mean() > 1e-4
    torch.testing.assert_close(net(x, t, None), null)
    assert (net(x, t + 0.3, torch.tensor([0, 1, 2])) - real).abs().mean() > 1e-4
    with pytest.raises(ValueError, match=r"\[0, 6\]"):
        net(x, t, torch.tensor([0, 1, 7]))
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(1, 3, 15, 15), t[:1])


def test_texture_unet_drop_cond_maps_to_the_null_index():
    net = TextureUNet(num_labels=4, channels=8, channel_mult=(1, 2))
    cond = torch.tensor([0, 1, 2, 3])
    dropped = net.drop_cond(cond, torch.tensor([True, False, True, False]))
    assert dropped.tolist() == [4, 1, 4, 3] and cond.tolist() == [0, 1, 2, 3]
    assert net.drop_cond(None, torch.ones(2, dtype=torch.bool)) is None


def test_training_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    images = torch.from_numpy(np.stack([make_texture(label, s, 16) for s in range(2) for label in TEXTURE_LABELS]))
    batch = {"x0": images.permute(0, 3, 1, 2) * 2 - 1, "cond": torch.arange(6).repeat(2)}
    module = DiffusionModule(TextureUNet(channels=16, channel_mult=(1, 2)), schedule=VPCosine(), cond_dropout=0.1)
    parts = module.unpack_batch(batch)

    def fixed_loss():
        with torch.no_grad():
            return float(module.compute_loss(parts, generator=torch.Generator().manual_seed(0), drop_cond=False))

    before = fixed_loss()
    optimiser = torch.optim.Adam(module.denoiser.parameters(), lr=2e-3)
    for step in range(15):
        optimiser.zero_grad()
        module.compute_loss(parts, generator=torch.Generator().manual_seed(step)).backward()
        optimiser.step()
    assert fixed_loss() < 0.7 * before


# --- diffusers ---------------------------------------------------------------------------------------
def _tiny_unet(**extra):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), **extra,
    )


def test_vplinear_matches_the_default_ddpm_scheduler():
    diffusers = pytest.importorskip("diffusers")
    ac = diffusers.DDPMScheduler().alphas_cumprod.double()
    torch.testing.assert_close(ddpm_alphas_cumprod(), ac, rtol=1e-5, atol=1e-7)
    schedule, k = VPLinear(), torch.arange(1000, dtype=torch.float64)
    # The scaled map t = k / 999 is within one step of the exact noise level ...
    scaled = (schedule.alpha(k / 999) - ac.sqrt()).abs()
    assert scaled.max() < 1.5e-3
    # ... which t = (k + 1) / 1000 hits, and the matched map inverts.
    assert (schedule.alpha((k + 1) / 1000) - ac.sqrt()).abs().max() < 1e-6
    exact = ddpm_alphas_cumprod()  # float64; diffusers computes its table in float32
    torch.testing.assert_close(diffusers_timestep((k + 1) / 1000, schedule, exact), k, atol=1e-6, rtol=0)
    assert float(diffusers_timestep(torch.tensor(0.0), schedule, exact)) == 0.0
    # Another VP schedule is matched by noise level: alphas_cumprod at the (interpolated) step.
    cosine, t = VPCosine(), torch.tensor([0.1, 0.5, 0.9])
    steps = diffusers_timestep(t, cosine, exact)
    lo = steps.floor().long()
    log_ac = torch.log(exact)
    interpolated = log_ac[lo] + (steps - lo) * (log_ac[lo + 1] - log_ac[lo])
    torch.testing.assert_close(interpolated, 2 * torch.log(cosine.alpha(t)))


def test_diffusers_unet_wraps_a_tiny_model_and_samples():
    unet = _tiny_unet()
    wrapped = DiffusersUNet(unet)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.25, 0.75])
    with torch.no_grad():
        out = wrapped(x, t)
        assert out.shape == x.shape
        torch.testing.assert_close(out, unet(x, t * 999).sample)
    with pytest.raises(ValueError, match="no class embedding"):
        wrapped(x, t, torch.tensor([0, 1]))
    matched = DiffusersUNet(unet, timestep_map="matched")
    torch.testing.assert_close(matched.timesteps(torch.tensor([0.5])), torch.tensor([499.0], dtype=torch.float64))
    with torch.no_grad():
        sample = run_sampler(wrapped, VPLinear(), torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)),
                             sampler="ddim", steps=3, generator=torch.Generator().manual_seed(1))
    assert sample.shape == (2, 3, 16, 16) and torch.isfinite(sample).all()


def test_diffusers_unet_passes_class_labels_and_guides(tmp_path):
    unet = _tiny_unet(num_class_embeds=3)
    unet.save_pretrained(tmp_path / "model")
    wrapped = DiffusersUNet(pretrained=str(tmp_path / "model"), null_label=2, prediction="v")
    assert wrapped.prediction == "v" and wrapped.has_class_embedding
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 0.5])
    with torch.no_grad():
        a = wrapped(x, t, torch.tensor([0, 0]))
        b = wrapped(x, t, torch.tensor([1, 1]))
        torch.testing.assert_close(wrapped(x, t, None), wrapped(x, t, torch.tensor([2, 2])))
        assert (a - b).abs().mean() > 0  # the label reaches the model
        assert wrapped.drop_cond(torch.tensor([0, 1]), torch.tensor([False, True])).tolist() == [0, 2]
        sample = run_sampler(wrapped, VPLinear(), torch.randn(2, 3, 16, 16), sampler="ddim", steps=2,
                             cond=torch.tensor([0, 1]), guidance=2.0)
    assert torch.isfinite(sample).all()
    with pytest.raises(ValueError, match="null_label"):
        DiffusersUNet(unet).drop_cond(torch.tensor([0]), torch.tensor([True]))
    with pytest.raises(FileNotFoundError, match="local folders only"):
        DiffusersUNet(pretrained=str(tmp_path / "missing"))


# --- the bundled config ------------------------------------------------------------------------------
def test_texture_config_trains_and_writes_a_checkpoint(tmp_path, monkeypatch):
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningCLI

    monkeypatch.setattr(sys, "argv", ["polydiff"])  # LightningCLI warns about pytest's own arguments
    root = tmp_path / "textures"
    write_texture_collection(root, 2, size=12)
    cli = LightningCLI(
        DiffusionModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        auto_configure_optimizers=False, save_config_kwargs={"overwrite": True},
        args=["fit", "--config", str(CONFIG), "--data.init_args.root", str(root), "--data.init_args.size", "8",
              "--data.init_args.batch_size", "4", "--model.init_args.denoiser.init_args.channels", "8",
              "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              "--trainer.default_root_dir", str(tmp_path / "run")],
    )
    assert isinstance(cli.model.denoiser, TextureUNet) and isinstance(cli.model.schedule, VPCosine)
    assert cli.model.guidance == 2.0 and cli.model.sampler == "ddim" and cli.model.sample_steps == 30
    assert math.isclose(cli.model.cond_dropout, 0.1)
    assert isinstance(cli.datamodule, TextureDataModule)
    assert cli.trainer.global_step == 2
    assert list((tmp_path / "run").rglob("*.ckpt"))
