"""EMA maths checked by hand, buffers, independence of the copy, DDP unwrapping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polydiff.ema import EMA



def _scalar_module(value: float) -> nn.Module:
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def _set(m: nn.Module, value: float) -> None:
    with torch.no_grad():
        m.weight.fill_(value)


def test_update_without_warmup_is_the_plain_average():
    live = _scalar_module(1.0)
    ema = EMA(live, decay=0.9, warmup=False)
    _set(live, 3.0)
    ema.update(live)  # 0.9 * 1 + 0.1 * 3
    assert ema.module.weight.item() == pytest.approx(1.2, abs=1e-6)
    _set(live, -1.0)
    ema.update(live)  # 0.9 * 1.2 + 0.1 * (-1)
    assert ema.module.weight.item() == pytest.approx(0.98, abs=1e-6)
    assert int(ema.num_updates) == 2


def test_warmup_uses_min_of_decay_and_the_ramp():
    live = _scalar_module(0.0)
    ema = EMA(live, decay=0.5)
    expected = 0.0
    for n, target in enumerate([10.0, 20.0, 30.0, 40.0]):
        d = min(0.5, (1 + n) / (10 + n))  # 0.1, 2/11, 0.25, 4/13
        assert ema.current_decay() == pytest.approx(d)
        _set(live, target)
        ema.update(live)
        expected = d * expected + (1 - d) * target
        assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
    # After the ramp passes the decay, the decay itself is used.
    for n in range(4, 20):
        ema.update(live)
    assert ema.current_decay() == 0.5


def test_decay_zero_tracks_the_weights_exactly():
    torch.manual_seed(0)
    live = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    ema = EMA(live, decay=0.0)
    for _ in range(3):
        with torch.no_grad():
            for p in live.parameters():
                p.add_(torch.randn_like(p))
        ema.update(live)
        for (name, p), q in zip(live.named_parameters(), ema.module.parameters()):
            assert torch.equal(p, q), name


def test_copy_is_frozen_and_independent():
    live = _scalar_module(1.0)
    ema = EMA(live, decay=0.9)
    assert not any(p.requires_grad for p in ema.module.parameters())
    _set(live, 5.0)  # not seen until update
    assert ema.module.weight.item() == 1.0
    assert ema(torch.ones(1, 1)).item() == 1.0  # calling the EMA evaluates the copy


def test_buffers_are_copied_not_averaged():
    live = nn.BatchNorm1d(2)
    ema = EMA(live, decay=0.9, warmup=False)
    live.train()
    live(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    ema.update(live)
    assert torch.equal(ema.module.running_mean, live.running_mean)
    assert torch.equal(ema.module.num_batches_tracked, live.num_batches_tracked)
    # ...while the affine weight (a parameter) is averaged: 0.9 * 1 + 0.1 * 1 = 1.
    assert torch.allclose(ema.module.weight, torch.ones(2))


def test_reset_and_copy_to():
    live = _scalar_module(2.0)
    ema = EMA(live, decay=0.9, warmup=False)
    _set(live, 4.0)
    ema.update(live)
    ema.reset(live)
    assert ema.module.weight.item() == 4.0 and int(ema.num_updates) == 0
    other = _scalar_module(0.0)
    ema.copy_to(other)
    assert other.weight.item() == 4.0


def test_state_dict_carries_weights_and_count():
    owner = nn.Module()
    owner.net = _scalar_module(1.0)
    owner.ema = EMA(owner.net, decay=0.9, warmup=False)
    _set(owner.net, 2.0)
    owner.ema.update(owner.net)
    state = owner.state_dict()
    assert {"ema.module.weight", "ema.num_updates"} <= set(state)
    fresh = nn.Module()
    fresh.net = _scalar_module(0.0)
    fresh.ema = EMA(fresh.net, decay=0.9, warmup=False)
    fresh.load_state_dict(state)
    assert fresh.ema.module.weight.item() == pytest.approx(1.1)
    assert int(fresh.ema.num_updates) == 1


def test_rejects_bad_decay():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        EMA(_scalar_module(0.0), decay=1.0)


def test_update_from_a_ddp_wrapped_module(tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs a free torch.distributed default group")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        live = _scalar_module(1.0)
        ema = EMA(nn.parallel.DistributedDataParallel(live), decay=0.5, warmup=False)
        assert "weight" in dict(ema.module.named_parameters())  # no "module." prefix
        wrapped = nn.parallel.DistributedDataParallel(live)
        _set(live, 3.0)
        ema.update(wrapped)
        assert ema.module.weight.item() == pytest.approx(2.0)
    finally:
        dist.destroy_process_group()
