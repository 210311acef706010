"""MotionTransformer: shapes, padding independence, the null text and classifier-free dropping."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from polydiff_motion.nets import MotionTransformer  # noqa: E402

D = 8


def tiny(**kw) -> MotionTransformer:
    torch.manual_seed(0)
    args = dict(dim=32, layers=2, heads=2, ff=64, text_dim=D, max_frames=24)
    return MotionTransformer(**{**args, **kw}).eval()


def batch(b: int = 3, n: int = 12):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, n, 263, generator=g)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 7:] = False
    mask[2, 3:] = False
    return x, torch.rand(b, generator=g), {"text": torch.randn(b, D, generator=g), "mask": mask}


@pytest.mark.parametrize("encoding", ["learned", "sinusoidal"])
def test_output_shape_and_prediction(encoding):
    net = tiny(position_encoding=encoding)
    x, t, cond = batch()
    assert net.prediction == "x0"
    assert net(x, t, cond).shape == x.shape
    assert net(x, torch.tensor(0.3), cond).shape == x.shape  # one shared time


def test_padded_frames_do_not_change_valid_ones():
    net = tiny()
    x, t, cond = batch()
    mask = cond["mask"]
    other = torch.where(mask[..., None], x, 100.0 * torch.randn_like(x))
    with torch.no_grad():
        a, b = net(x, t, cond), net(other, t, cond)
    assert torch.allclose(a[mask], b[mask], atol=1e-5)
    # Without the mask the same change does reach the valid frames.
    with torch.no_grad():
        c = net(other, t, {"text": cond["text"]})
        d = net(x, t, {"text": cond["text"]})
    assert not torch.allclose(c[mask], d[mask], atol=1e-3)


def test_null_text_differs_and_drop_cond_keeps_the_mask():
    net = tiny()
    x, t, cond = batch()
    drop = torch.tensor([True, False, True])
    dropped = net.drop_cond(cond, drop)
    assert dropped["mask"] is cond["mask"]
    assert torch.equal(dropped["null"], drop)
    assert torch.equal(dropped["text"][1], cond["text"][1]) and not dropped["text"][0].any()
    assert "null" not in cond  # the input is left as it was
    with torch.no_grad():
        real, null = net(x, t, cond), net(x, t, dropped)
    assert torch.equal(real[1], null[1])
    assert not torch.allclose(real[0], null[0], atol=1e-4)
    # The null token ignores whatever text sits in a null row.
    scrambled = {**dropped, "text": torch.randn(3, D)}
    with torch.no_grad():
        assert torch.allclose(net(x, t, scrambled)[0], null[0], atol=1e-6)
    # Dropping again keeps rows already null.
    again = net.drop_cond(dropped, torch.tensor([False, False, True]))
    assert torch.equal(again["null"], drop)


def test_rejects_wrong_sizes():
    net = tiny()
    x, t, cond = batch()
    with pytest.raises(ValueError, match="does not fit"):
        net(torch.randn(1, 30, 263), t[:1])
    with pytest.raises(ValueError, match="text embeddings"):
        net(x, t, {"text": torch.randn(3, D + 1), "mask": cond["mask"]})
    with pytest.raises(ValueError, match="heads"):
        MotionTransformer(dim=30, heads=4)
