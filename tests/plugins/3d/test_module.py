"""``PointDiffusion``: data units, completion's kept observations, class names and checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trimesh")

from polydiff.checkpoint import CheckpointError  # noqa: E402
from polydiff.cli import main  # noqa: E402
from polydiff_3d.commands import load_point_model, load_texture_model  # noqa: E402
from polydiff_3d.data import ShapeDataModule  # noqa: E402
from polydiff_3d.formats import write_demo_collection  # noqa: E402
from polydiff_3d.module import PointDiffusion, check_data_info  # noqa: E402
from polydiff_3d.nets import PointVoxelDenoiser  # noqa: E402

torch.set_num_threads(1)

INFO = {"categories": ["chair", "vase"], "points": 32, "normalization": "global", "centre": [1.0, -2.0, 0.5],
        "scale": 3.0}


def _model(num_classes: int = 2, info: dict | None = INFO) -> PointDiffusion:
    torch.manual_seed(0)
    net = PointVoxelDenoiser(num_classes=num_classes, channels=(8, 8), resolutions=(4, 4), emb_dim=16)
    for p in net.head[-1].parameters():  # a non-zero prediction, so sampling moves the state
        torch.nn.init.normal_(p, std=0.1)
    return PointDiffusion(net, sample_steps=2, data_info=info).eval()


def test_units_round_trip():
    model = _model()
    x = torch.randn(2, 10, 3)
    data = model.to_data_units(x)
    torch.testing.assert_close(data, x * 3.0 + torch.tensor([1.0, -2.0, 0.5]))
    torch.testing.assert_close(model.to_network_units(data), x)


def test_generate_returns_data_units():
    model = _model()
    out = model.generate(3, category="vase", points=20, steps=2, guidance=1.0,
                         generator=torch.Generator().manual_seed(4))
    assert out.shape == (3, 20, 3) and torch.isfinite(out).all()
    raw = model.sample((3, 20, 3), cond=torch.full((3,), 1), guidance=1.0, steps=2,
                       generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out, model.to_data_units(raw))
    # The default point count is the data's; no category samples the null class.
    assert model.generate(1, steps=2).shape == (1, 32, 3)
    null = model.sample((3, 20, 3), cond=torch.full((3,), 2), guidance=1.0, steps=2,
                        generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model.generate(3, points=20, steps=2, generator=torch.Generator().manual_seed(4)),
                               model.to_data_units(null))


def test_complete_keeps_the_observed_points():
    model = _model()
    g = torch.Generator().manual_seed(0)
    small = torch.randn(10, 3, generator=g) * 2 + 5  # data units, far from the data's centre
    large = torch.randn(40, 3, generator=g)
    out = model.complete([small, large], category="chair", points=32, steps=3, generator=g)
    assert out.shape == (2, 32, 3)
    torch.testing.assert_close(out[0, :10], small, atol=1e-4, rtol=0)
    # A partial with more than half the points is subsampled to points // 2 of its own points.
    kept = out[1, :16]
    gaps = (kept[:, None, :] - large[None]).abs().amax(-1).amin(-1)
    assert gaps.max() < 1e-4
    assert len(torch.unique(kept, dim=0)) == 16
    # The free points were denoised, not left at the observation.
    assert (out[0, 10:][:, None, :] - small[None]).abs().amax(-1).amin(-1).min() > 1e-3


def test_class_index_errors():
    model = _model()
    assert model.class_index("vase") == 1 and model.class_index(None) is None
    with pytest.raises(ValueError, match="unknown category 'sofa'; this model knows: chair, vase"):
        model.class_index("sofa")
    unconditional = _model(num_classes=0)
    assert not unconditional.conditional
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.class_index("chair")
    assert unconditional.generate(2, points=16, steps=2).shape == (2, 16, 3)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.generate(2, category="chair", steps=2)


def test_configure_data_checks():
    with pytest.raises(ValueError, match="1 classes but the data has 2 categories"):
        _model(num_classes=1)
    model = _model(info=None)
    with pytest.raises(Exception):
        model.categories
    with pytest.raises(ValueError, match="lacks scale"):
        check_data_info({k: v for k, v in INFO.items() if k != "scale"})
    with pytest.raises(ValueError, match="scale must be positive"):
        check_data_info({**INFO, "scale": 0.0})
    with pytest.raises(ValueError, match="no categories"):
        check_data_info({**INFO, "categories": []})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(shapes, checkpoint): the ``points`` config with a tiny network, two steps on 2 x 10 shapes."""
    root = tmp_path_factory.mktemp("module")
    shapes = root / "shapes"
    write_demo_collection(shapes, 10, categories=["chair", "vase"])
    status = main([
        "3d", "fit", "-c", "points", "--data.root", str(shapes), "--data.points", "32", "--data.cache_points", "64",
        "--data.batch_size", "4", "--model.init_args.denoiser.init_args.channels", "[8, 8]",
        "--model.init_args.denoiser.init_args.resolutions", "[4, 4]", "--model.init_args.denoiser.init_args.emb_dim",
        "16", "--model.init_args.sample_steps", "2", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
        "--trainer.limit_val_batches", "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root / "run"),
    ])
    assert status == 0
    (ckpt,) = sorted((root / "run").rglob("*.ckpt"))
    return shapes, ckpt


def test_checkpoint_keeps_the_data_description(trained):
    shapes, ckpt = trained
    model = load_point_model(ckpt)
    expected = ShapeDataModule(str(shapes), points=32, cache_points=64).info()
    assert model.data_info["categories"] == ["chair", "vase"]
    assert model.data_info["points"] == 32 and model.data_info["normalization"] == "global"
    np.testing.assert_allclose(model.data_info["centre"], expected["centre"], rtol=1e-6)
    assert model.data_info["scale"] == pytest.approx(expected["scale"], rel=1e-6)
    assert not model.training
    out = model.generate(2, category="chair", steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 32, 3) and torch.isfinite(out).all()


def test_texture_loader_names_a_point_checkpoint(trained):
    _, ckpt = trained
    with pytest.raises(CheckpointError, match="is a point-cloud checkpoint, not a texture denoiser"):
        load_texture_model(ckpt)
