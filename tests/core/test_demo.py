"""The offline demo: data, the MLP denoiser, the metric and run_demo's outputs."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from polydiff.demo import MixtureDataModule, MixtureMetrics, MLPDenoiser, ring_mixture, run_demo



def test_ring_mixture_geometry():
    mix = ring_mixture()
    assert mix.num_components == 8
    assert torch.allclose(mix.means.norm(dim=1), torch.full((8,), 4.0, dtype=torch.float64))
    assert torch.allclose(mix.covs[3], 0.09 * torch.eye(2, dtype=torch.float64))


def test_datamodule_batches_and_determinism():
    data = MixtureDataModule(n_train=512, n_val=100, batch_size=64, seed=3)
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"x0", "cond"}
    assert batch["x0"].shape == (64, 2) and batch["x0"].dtype == torch.float32
    assert batch["cond"].shape == (64,) and batch["cond"].dtype == torch.long
    # Labels are the component each point came from.
    means = data.mixture.means.float()
    assert ((batch["x0"] - means[batch["cond"]]).norm(dim=1) < 5 * 0.3).all()
    again = MixtureDataModule(n_train=512, n_val=100, batch_size=64, seed=3)
    assert torch.equal(next(iter(again.train_dataloader()))["x0"], batch["x0"])
    assert len(data.val_dataloader().dataset) == 100


def test_mlp_takes_per_sample_or_per_coordinate_times():
    torch.manual_seed(0)
    net = MLPDenoiser(hidden=16, depth=2, prediction="x0")
    x, t = torch.randn(5, 2), torch.rand(5)
    out = net(x, t)
    assert out.shape == (5, 2) and net.prediction == "x0"
    assert torch.allclose(net(x, t[:, None].expand(5, 2)), out)
    assert torch.allclose(net(x, torch.tensor(0.3)), net(x, torch.full((5,), 0.3)))
    assert not torch.allclose(net(x, torch.stack([t, 1 - t], 1)), out)


def test_mlp_null_condition_is_a_dedicated_index():
    torch.manual_seed(0)
    net = MLPDenoiser(hidden=16, depth=1, num_classes=3)
    x, t = torch.randn(4, 2), torch.rand(4)
    labels = torch.tensor([0, 1, 2, 0])
    dropped = net.drop_cond(labels, torch.tensor([True, False, True, False]))
    assert dropped.tolist() == [3, 1, 3, 0]
    assert torch.equal(labels, torch.tensor([0, 1, 2, 0]))  # not modified in place
    null = net(x, t, None)
    assert torch.allclose(net(x, t, torch.full((4,), 3)), null)
    assert torch.allclose(net(x, t, torch.full((4,), -1)), null)
    assert not torch.allclose(net(x, t, torch.zeros(4, dtype=torch.long)), null)  # class 0 is a class
    assert net.label.num_embeddings == 4


def test_mixture_metrics_separate_right_and_wrong_samples():
    metric = MixtureMetrics()
    mix = ring_mixture()
    good = mix.sample(512, generator=torch.Generator().manual_seed(1))
    shifted = good + 1.5
    assert metric(good, {})["sliced_w2"] < 0.3 < metric(shifted, {})["sliced_w2"]
    # With labels, samples are compared with their own components.
    from_zero = mix.sample(256, generator=torch.Generator().manual_seed(2), component=0)
    same = metric(from_zero, {"cond": torch.zeros(256, dtype=torch.long)})["sliced_w2"]
    opposite = metric(from_zero, {"cond": torch.full((256,), 4)})["sliced_w2"]
    assert same < 0.15 and opposite > 5.0


def test_run_demo_writes_only_its_two_files(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "out"
    metrics = run_demo(out, max_steps=20, progress=False, n_samples=1000)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "samples.csv"]
    assert list(cwd.iterdir()) == []
    assert json.loads((out / "metrics.json").read_text()) == metrics
    with open(out / "samples.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 1000 and set(rows[0]) == {"source", "x", "y"}
    assert {r["source"] for r in rows} == {"diffusion", "oracle", "gaussian", "data"}
    assert metrics["train_steps"] == 20 and metrics["sampler"] == "dpmpp_2m"
    # The baselines are honest regardless of training: the exact denoiser reaches the data,
    # a single Gaussian cannot (the sliced distance of 1000 points is noisy; the off-mode share
    # separates them clearly).
    assert metrics["sw2_oracle"] < metrics["sw2_gaussian"]
    assert metrics["off_mode_oracle"] < 0.1 < 0.5 < metrics["off_mode_gaussian"]


def test_run_demo_keeps_the_thread_count(tmp_path):
    threads = torch.get_num_threads()
    run_demo(tmp_path, max_steps=1, progress=False, n_samples=50)
    assert torch.get_num_threads() == threads


@pytest.mark.slow
def test_run_demo_learns_the_ring(tmp_path):
    metrics = run_demo(tmp_path, progress=False)
    assert metrics["sw2_diffusion"] < 0.5 * metrics["sw2_gaussian"]
    assert metrics["sw2_diffusion"] < 1.5 * metrics["sw2_oracle"]
    assert metrics["off_mode_diffusion"] < 0.2
