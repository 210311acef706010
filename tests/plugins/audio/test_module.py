"""SGMSEModule and StoRMModule: batches, losses, a few optimisation steps, enhance, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from polydiff.schedules import OUVEBridge

from polydiff_audio.module import EnhancementMetrics, SGMSEModule, StoRMModule
from polydiff_audio.nets import SpectrogramPredictor, SpectrogramScoreNet

CONFIGS = Path(__file__).resolve().parents[3] / "plugins" / "audio" / "configs"
TINY = {"channels": 8, "channel_mult": (1, 2)}


def tiny_sgmse(**kwargs) -> SGMSEModule:
    torch.manual_seed(0)
    return SGMSEModule(denoiser=SpectrogramScoreNet(**TINY), **kwargs)


def tiny_storm(**kwargs) -> StoRMModule:
    torch.manual_seed(0)
    return StoRMModule(denoiser=SpectrogramScoreNet(**TINY), predictor=SpectrogramPredictor(**TINY), **kwargs)


def paired_batch(batch: int = 2, samples: int = 4000, seed: int = 0) -> dict:
    """Tones in white noise: a clean target that is easy to tell from the noise."""
    g = torch.Generator().manual_seed(seed)
    n = torch.arange(samples, dtype=torch.float32)
    freqs = 200.0 + 300.0 * torch.rand(batch, 1, 1, generator=g)
    clean = 0.3 * torch.sin(2 * torch.pi * freqs * n / 16000)
    noisy = clean + 0.1 * torch.randn(batch, 1, samples, generator=g)
    return {"clean": clean, "noisy": noisy, "name": [f"f{i}" for i in range(batch)]}


def test_sgmse_defaults_are_sgmse_plus():
    module = SGMSEModule()
    assert isinstance(module.schedule, OUVEBridge)
    assert isinstance(module.denoiser, SpectrogramScoreNet) and module.native_prediction == "score"
    assert module.loss_space == "eps" and module.sampler == "pc" and module.sample_steps == 30
    assert module.sampler_options == {"snr": 0.5, "corrector_steps": 1, "predictor": "euler_maruyama"}
    assert module.network_evaluations() == 60
    assert module.segment_samples == 64000 and module.overlap_samples == 8000


def test_constructor_rejects_bad_values_with_the_valid_ones():
    with pytest.raises(ValueError, match="its options"):
        tiny_sgmse(sampler_options={"eta": 1.0})
    with pytest.raises(ValueError, match="valid: noisy, none"):
        tiny_sgmse(normalize="peak")
    with pytest.raises(ValueError, match="overlap_seconds"):
        tiny_sgmse(segment_seconds=1.0, overlap_seconds=0.6)


def test_unpack_batch_gives_complex_spectrograms():
    module = tiny_sgmse()
    parts = module.unpack_batch(paired_batch(samples=4000))
    frames = module.transform.num_frames(4000)
    for key in ("x0", "y", "cond"):
        assert parts[key].shape == (2, 1, 256, frames) and parts[key].dtype == torch.complex64
    assert parts["cond"] is parts["y"] and parts["loss_mask"] is None and parts["known"] is None
    # normalize="noisy": the noisy waveform's peak is 1, and the clean one is scaled with it.
    assert torch.allclose(parts["noisy"].abs().amax(dim=(1, 2)), torch.ones(2))
    batch = paired_batch(samples=4000)
    peak = batch["noisy"].abs().amax(dim=(1, 2), keepdim=True)
    assert torch.allclose(parts["clean"], batch["clean"] / peak)
    with pytest.raises(KeyError, match="clean"):
        module.unpack_batch({"x0": torch.zeros(1, 1, 400)})


def test_compute_loss_is_a_finite_real_scalar_that_backprops():
    module = tiny_sgmse()
    loss = module.compute_loss(module.unpack_batch(paired_batch()), generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and not loss.is_complex() and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in module.denoiser.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def _mean_loss(module, parts) -> float:
    with torch.no_grad():
        return sum(float(module.compute_loss(parts, generator=torch.Generator().manual_seed(s))) for s in range(4)) / 4


@pytest.mark.parametrize("make", [tiny_sgmse, tiny_storm], ids=["sgmse", "storm"])
def test_a_few_optimisation_steps_lower_the_loss(make):
    module = make()
    parts = module.unpack_batch(paired_batch(batch=2, samples=2000))
    optimizer = module.configure_optimizers()
    optimizer.param_groups[0]["lr"] = 3e-3
    before = _mean_loss(module, parts)
    for step in range(25):
        optimizer.zero_grad()
        module.compute_loss(parts, generator=torch.Generator().manual_seed(100 + step)).backward()
        optimizer.step()
    assert _mean_loss(module, parts) < 0.9 * before


def test_enhance_returns_the_input_length_for_mono_stereo_and_batches():
    module = tiny_sgmse()
    g = torch.Generator().manual_seed(0)
    for shape in [(1, 3001), (2, 3001), (3, 2, 1500)]:
        wav = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        out = module.enhance(wav, steps=2, generator=torch.Generator().manual_seed(1))
        assert out.shape == wav.shape and out.dtype == wav.dtype and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="shorter"):
        module.enhance(torch.zeros(1, 100))


def test_stereo_channels_are_enhanced_independently():
    module = tiny_sgmse()
    left = 0.1 * torch.randn(1, 2000, generator=torch.Generator().manual_seed(0))
    stereo = torch.cat([left, 0.5 * left.flip(-1)])
    calls = []
    original = module.enhance_spectrogram

    def spy(y, **kwargs):
        calls.append(tuple(y.shape))
        return original(y, **kwargs)

    module.enhance_spectrogram = spy
    module.enhance(stereo, steps=2)
    assert calls and all(shape[1] == 1 for shape in calls) and calls[0][0] == 2


def test_long_inputs_are_processed_in_bounded_segments():
    module = tiny_sgmse(segment_seconds=0.1, overlap_seconds=0.02, segment_batch=2)  # 1600 / 320 samples
    lengths = []
    original = module.enhance_spectrogram

    def spy(y, **kwargs):
        lengths.append(tuple(y.shape))
        return original(y, **kwargs)

    module.enhance_spectrogram = spy
    wav = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    out = module.enhance(wav, steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == wav.shape and torch.isfinite(out).all()
    frames = module.transform.num_frames(1600)
    assert len(lengths) > 1
    # Never more than segment_batch segments times two channels at once, each one segment long.
    assert all(shape[0] <= 4 and shape[-1] == frames for shape in lengths)


@pytest.mark.parametrize("make", [tiny_sgmse, tiny_storm], ids=["sgmse", "storm"])
def test_seeded_enhance_is_reproducible(make):
    module = make()
    wav = 0.1 * torch.randn(2, 2500, generator=torch.Generator().manual_seed(0))
    a = module.enhance(wav, steps=3, generator=torch.Generator().manual_seed(7))
    b = module.enhance(wav, steps=3, generator=torch.Generator().manual_seed(7))
    c = module.enhance(wav, steps=3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_storm_loss_is_the_weighted_sum_of_both_terms_and_trains_both_networks():
    module = tiny_storm(predictor_weight=0.5)
    parts = module.unpack_batch(paired_batch())
    terms = module.loss_terms(parts, generator=torch.Generator().manual_seed(0))
    assert terms["predictive"] > 0 and terms["diffusion"] > 0
    assert torch.allclose(terms["total"], 0.5 * terms["predictive"] + terms["diffusion"])
    loss = module.compute_loss(parts, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loss, terms["total"])
    loss.backward()
    for net in (module.denoiser, module.predictor):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    optimised = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    assert {id(p) for p in module.predictor.parameters()} <= optimised


def _count_calls(*nets) -> list[int]:
    count = [0]
    for net in nets:
        net.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


def test_storm_enhance_spends_fewer_network_evaluations_than_sgmse():
    wav = 0.1 * torch.randn(1, 1500, generator=torch.Generator().manual_seed(0))
    sgmse, storm = tiny_sgmse(), tiny_storm()
    sgmse_calls = _count_calls(sgmse.denoiser)
    storm_calls = _count_calls(storm.denoiser, storm.predictor)
    sgmse.enhance(wav, generator=torch.Generator().manual_seed(0))
    storm.enhance(wav, generator=torch.Generator().manual_seed(0))
    assert sgmse_calls[0] == sgmse.network_evaluations() == 60
    assert storm_calls[0] == storm.network_evaluations() == 17
    assert 3 * storm_calls[0] <= sgmse_calls[0] + 3  # about a third, with the predictor's pass


def test_storm_with_zero_steps_is_its_predictor_alone():
    storm = tiny_storm()
    calls = _count_calls(storm.denoiser, storm.predictor)
    y = storm.transform(0.1 * torch.randn(2, 1, 1500, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        expected = storm.predictor(y)
    out = storm.enhance_spectrogram(y, steps=0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, expected)
    assert calls[0] == 2 and storm.network_evaluations(0) == 1  # the reference pass and one in enhance


def test_enhancement_metrics_score_the_clean_reference_highest():
    module = tiny_sgmse()
    parts = module.unpack_batch(paired_batch())
    perfect = EnhancementMetrics()(parts["x0"], parts)
    noisy = EnhancementMetrics()(parts["y"], parts)
    assert perfect["si_sdr"] > 40 and perfect["si_sdr_improvement"] > 20
    assert abs(float(noisy["si_sdr_improvement"])) < 1e-3


@pytest.mark.parametrize("make", [tiny_sgmse, tiny_storm], ids=["sgmse", "storm"])
def test_fit_and_validate_log_loss_and_sampled_si_sdr(make):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    module = make(val_metrics=EnhancementMetrics(), val_sample_steps=2)
    batch = paired_batch(batch=1, samples=2000)
    items = [{k: v[0] for k, v in batch.items()}] * 2
    loader = DataLoader(items, batch_size=2)
    trainer = pl.Trainer(
        max_steps=2, limit_val_batches=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, accelerator="cpu", devices=1,
    )
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=DataLoader(items[:1], batch_size=1))
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["val/loss"]) and torch.isfinite(metrics["val/si_sdr"])
    assert int(module.ema.num_updates) == 2


@pytest.mark.parametrize("name, cls", [("sgmse.yaml", SGMSEModule), ("storm.yaml", StoRMModule)])
def test_bundled_configs_instantiate(name, cls):
    from jsonargparse import ArgumentParser
    from polydiff_audio.data import PairedAudioDataModule

    config = yaml.safe_load((CONFIGS / name).read_text())
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=SGMSEModule)
    parser.add_argument("--data", type=PairedAudioDataModule)
    parsed = parser.parse_object({"model": config["model"], "data": config["data"]})
    init = parser.instantiate(parsed) if hasattr(parser, "instantiate") else parser.instantiate_classes(parsed)
    assert type(init.model) is cls and isinstance(init.data, PairedAudioDataModule)
    assert isinstance(init.model.schedule, OUVEBridge) and init.model.val_metrics is not None
    assert init.model.network_evaluations() <= 60
    assert config["trainer"]["max_steps"] <= 1000
