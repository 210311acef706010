"""Checkpoints: a Trainer round trip, weights-only loading, and every refusal names the file."""

from __future__ import annotations

import pickle

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from polydiff.checkpoint import CheckpointError, allowed_class_prefixes, load_checkpoint, load_module
from polydiff.demo import MixtureDataModule
from polydiff.denoiser import Denoiser
from polydiff.module import DiffusionModule



CONFIG = {
    "class_path": "polydiff.module.DiffusionModule",
    "init_args": {
        "denoiser": {
            "class_path": "polydiff.demo.MLPDenoiser",
            "init_args": {"hidden": 16, "depth": 1, "num_classes": 8, "prediction": "v"},
        },
        "schedule": {"class_path": "polydiff.schedules.VPCosine"},
        "ema_decay": 0.9,
        "sample_steps": 4,
        "guidance": 2.0,
        "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
    },
}


def _build(config: dict) -> DiffusionModule:
    """What the CLI does: instantiate from the config and record it."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=DiffusionModule)
    parsed = parser.parse_object({"model": config})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    module = instantiate(parsed).model
    module.polydiff_config = config
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A module fitted for a few steps and saved by the Trainer (with its callbacks' state)."""
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    root = tmp_path_factory.mktemp("ckpt")
    module = _build(CONFIG)
    module.plugin_name = "demo"
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=12, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, limit_val_batches=1,
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=root / "auto", monitor="val/loss")],
    )
    trainer.fit(module, datamodule=MixtureDataModule(n_train=768, n_val=64, batch_size=64))
    path = root / "model.ckpt"
    trainer.save_checkpoint(path)
    return {"module": module, "path": path, "root": root}


def _resave(trained, tmp_path, name: str, edit) -> str:
    checkpoint = torch.load(trained["path"], weights_only=True)
    edit(checkpoint)
    path = tmp_path / name
    torch.save(checkpoint, path)
    return path


# --- the round trip -------------------------------------------------------------------------

def test_checkpoint_loads_weights_only_with_the_polydiff_record(trained):
    checkpoint = load_checkpoint(trained["path"], plugin="demo")
    meta = checkpoint["polydiff"]
    assert meta["format"] == 1 and meta["plugin"] == "demo"
    assert meta["module_class"] == "polydiff.module.DiffusionModule"
    assert meta["model_config"] == CONFIG
    assert "ema.module.inp.weight" in checkpoint["state_dict"]
    # The checkpoint the ModelCheckpoint callback wrote on its own loads as well.
    (auto,) = list((trained["root"] / "auto").glob("*.ckpt"))
    assert load_checkpoint(auto)["polydiff"]["plugin"] == "demo"


def test_load_module_rebuilds_and_samples_identically(trained):
    original = trained["module"]
    rebuilt = load_module(trained["path"], plugin="demo")
    assert type(rebuilt) is DiffusionModule and not rebuilt.training
    assert rebuilt.plugin_name == "demo" and rebuilt.guidance == 2.0 and rebuilt.sample_steps == 4
    assert int(rebuilt.ema.num_updates) == 12
    cond = torch.arange(32) % 8
    a = original.sample((32, 2), cond=cond, generator=torch.Generator().manual_seed(3))
    b = rebuilt.sample((32, 2), cond=cond, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # use_ema puts the EMA weights into the denoiser itself...
    for name, p in rebuilt.denoiser.named_parameters():
        assert torch.equal(p, dict(original.ema.module.named_parameters())[name]), name
    # ...and without it the trained weights stay.
    raw = load_module(trained["path"], use_ema=False)
    assert torch.equal(raw.denoiser.inp.weight, original.denoiser.inp.weight)
    assert not torch.equal(raw.denoiser.inp.weight, rebuilt.denoiser.inp.weight)


def test_rebuilt_module_can_be_saved_again_with_its_config(trained, tmp_path):
    rebuilt = load_module(trained["path"])
    record: dict = {}
    rebuilt.on_save_checkpoint(record)
    assert record["polydiff"]["model_config"] == CONFIG and record["polydiff"]["plugin"] == "demo"


# --- refusals -------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError, match=f"{path}: no such checkpoint file"):
        load_checkpoint(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="notes.ckpt is not a torch checkpoint"):
        load_module(path)


class _Trap:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle protocol 2"])
def test_pickled_code_is_refused_and_never_run(tmp_path, how):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {}, "polydiff": {"format": 1}, "trap": _Trap(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(CheckpointError, match="evil.ckpt contains pickled Python code objects .*will not execute"):
        load_checkpoint(path)
    assert not marker.exists()


def test_plain_modern_pickle_is_not_a_torch_file(tmp_path):
    path = tmp_path / "data.pkl"
    with open(path, "wb") as f:
        pickle.dump({"a": 1}, f, protocol=4)
    with pytest.raises(CheckpointError, match="data.pkl is a plain Python pickle"):
        load_checkpoint(path)


def test_not_a_polydiff_checkpoint(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="other.ckpt is not a polydiff checkpoint"):
        load_checkpoint(path)


def test_checkpoint_of_another_plugin(trained, tmp_path):
    path = _resave(trained, tmp_path, "audio.ckpt", lambda c: c["polydiff"].update(plugin="audio"))
    with pytest.raises(CheckpointError, match="audio.ckpt is a checkpoint of plugin 'audio', not 'motion'"):
        load_checkpoint(path, plugin="motion")
    with pytest.raises(CheckpointError, match="of plugin 'audio', not 'motion'"):
        load_module(path, plugin="motion")


def test_core_checkpoint_asked_for_as_a_plugin(trained, tmp_path):
    path = _resave(trained, tmp_path, "core.ckpt", lambda c: c["polydiff"].update(plugin=None))
    expected = r"core.ckpt is a checkpoint of the polydiff core \(no plugin\), not 'audio'"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path, plugin="audio")


def test_unknown_record_format(trained, tmp_path):
    path = _resave(trained, tmp_path, "future.ckpt", lambda c: c["polydiff"].update(format=2))
    with pytest.raises(CheckpointError, match="future.ckpt has a polydiff record of format 2"):
        load_checkpoint(path)


def test_missing_model_config_says_how_to_load(trained, tmp_path):
    path = _resave(trained, tmp_path, "bare.ckpt", lambda c: c["polydiff"].update(model_config=None))
    with pytest.raises(CheckpointError, match="bare.ckpt records no model config.*load_state_dict"):
        load_module(path)


def _with_denoiser_class(class_path: str):
    def edit(checkpoint):
        checkpoint["polydiff"]["model_config"]["init_args"]["denoiser"]["class_path"] = class_path
    return edit


def test_disallowed_class_path_is_refused_before_import(trained, tmp_path):
    path = _resave(trained, tmp_path, "foreign.ckpt", _with_denoiser_class("some_unknown_pkg.nets.Net"))
    expected = "foreign.ckpt names the class 'some_unknown_pkg.nets.Net', which is outside"
    with pytest.raises(CheckpointError, match=expected):
        load_module(path)
    path = _resave(trained, tmp_path, "cls.ckpt", lambda c: c["polydiff"].update(module_class="os.system"))
    with pytest.raises(CheckpointError, match="'os.system', which is outside"):
        load_module(path)
    nested = _resave(
        trained, tmp_path, "nested.ckpt",
        lambda c: c["polydiff"]["model_config"]["init_args"].update(
            optimizer={"class_path": "subprocess.Popen", "init_args": {"args": ["true"]}}
        ),
    )
    with pytest.raises(CheckpointError, match="'subprocess.Popen'"):
        load_module(nested)


class TinyNet(Denoiser):
    """A denoiser from outside polydiff (this test module)."""

    def __init__(self, width: int = 4):
        super().__init__(prediction="eps")
        self.lin = nn.Linear(2, 2)
        self.width = width

    def forward(self, x, t, cond=None):
        return self.lin(x)


def test_allowed_prefixes_admit_a_trusted_package(tmp_path):
    class_path = f"{TinyNet.__module__}.TinyNet"
    config = {"class_path": "polydiff.module.DiffusionModule",
              "init_args": {"denoiser": {"class_path": class_path, "init_args": {"width": 3}}}}
    module = _build(config)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    path = tmp_path / "tiny.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="outside the modules"):
        load_module(path)
    rebuilt = load_module(path, allowed_prefixes=[TinyNet.__module__])
    assert isinstance(rebuilt.denoiser, TinyNet) and rebuilt.denoiser.width == 3
    assert torch.equal(rebuilt.denoiser.lin.weight, module.denoiser.lin.weight)


def test_weights_that_do_not_fit_the_config(trained, tmp_path):
    def edit(checkpoint):
        checkpoint["polydiff"]["model_config"]["init_args"]["denoiser"]["init_args"]["hidden"] = 32
    path = _resave(trained, tmp_path, "mismatch.ckpt", edit)
    with pytest.raises(CheckpointError, match="mismatch.ckpt: the weights do not fit the rebuilt module"):
        load_module(path)


def test_allowed_prefixes_of_a_plugin():
    prefixes = allowed_class_prefixes("audio", ["my_lab.models"])
    assert prefixes[:3] == ("polydiff.", "torch.nn.", "torch.optim.")
    assert "polydiff_audio." in prefixes and "my_lab.models." in prefixes


# --- expect=, require= and the module's own on_load_checkpoint hook ---------------------------

class RecordingModule(DiffusionModule):
    """A module subclass (outside polydiff) that keeps what its ``on_load_checkpoint`` hook saw."""

    def on_load_checkpoint(self, checkpoint):
        self.hook_keys = set(checkpoint)
        self.hook_extra = checkpoint.get("extra")
        self.hook_weight = self.denoiser.inp.weight.detach().clone()


def _as_recording(extra=None):
    class_path = f"{RecordingModule.__module__}.RecordingModule"

    def edit(checkpoint):
        checkpoint["polydiff"]["module_class"] = class_path
        checkpoint["polydiff"]["model_config"]["class_path"] = class_path
        if extra is not None:
            checkpoint["extra"] = extra
    return edit


def test_expect_accepts_the_class_and_its_bases(trained):
    assert type(load_module(trained["path"], expect=DiffusionModule)) is DiffusionModule
    assert type(load_module(trained["path"], expect=nn.Module)) is DiffusionModule


def test_expect_refuses_another_class_before_building_it(trained, tmp_path):
    with pytest.raises(CheckpointError, match="model.ckpt holds a DiffusionModule, not a RecordingModule"):
        load_module(trained["path"], expect=RecordingModule)
    # A subclass is named by its own name.
    path = _resave(trained, tmp_path, "rec.ckpt", _as_recording())
    with pytest.raises(CheckpointError, match="rec.ckpt holds a RecordingModule, not a Denoiser"):
        load_module(path, allowed_prefixes=[RecordingModule.__module__], expect=Denoiser)


def test_require_names_the_missing_record(trained, tmp_path):
    with pytest.raises(CheckpointError, match="model.ckpt has no 'extra' record, so it was not written by the "
                                              "expected training"):
        load_module(trained["path"], require=("extra",))
    with pytest.raises(CheckpointError, match="has no 'extra' record, so it was not written by the demo plugin's "
                                              "training"):
        load_module(trained["path"], plugin="demo", require=["extra"])
    # A record that is not a mapping does not count.
    path = _resave(trained, tmp_path, "listed.ckpt", lambda c: c.update(extra=[1, 2]))
    with pytest.raises(CheckpointError, match="listed.ckpt has no 'extra' record"):
        load_module(path, require=("extra",))
    path = _resave(trained, tmp_path, "extra.ckpt", lambda c: c.update(extra={"n": 3}, other={}))
    assert type(load_module(path, require=("extra", "other"))) is DiffusionModule


def test_require_is_checked_before_the_config(trained, tmp_path):
    path = _resave(trained, tmp_path, "bare.ckpt", lambda c: c["polydiff"].update(model_config=None))
    with pytest.raises(CheckpointError, match="bare.ckpt has no 'extra' record"):
        load_module(path, require=("extra",))


def test_on_load_checkpoint_sees_the_whole_checkpoint_after_the_weights(trained, tmp_path):
    path = _resave(trained, tmp_path, "rec.ckpt", _as_recording(extra={"answer": 42}))
    module = load_module(path, allowed_prefixes=[RecordingModule.__module__], expect=RecordingModule,
                         require=("extra",))
    assert type(module) is RecordingModule and not module.training
    assert module.hook_extra == {"answer": 42}
    assert {"state_dict", "polydiff", "extra"} <= module.hook_keys
    # The hook ran with the trained weights loaded, before the EMA weights were copied in.
    original = trained["module"]
    assert torch.equal(module.hook_weight, original.denoiser.inp.weight)
    assert torch.equal(module.denoiser.inp.weight, original.ema.module.inp.weight)
    assert not torch.equal(module.denoiser.inp.weight, module.hook_weight)


def test_load_module_reads_the_file_once(trained, monkeypatch):
    calls = []
    real_load = torch.load

    def counting_load(*args, **kwargs):
        calls.append(args[0] if args else kwargs.get("f"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    load_module(trained["path"], plugin="demo", expect=DiffusionModule)
    assert len(calls) == 1
