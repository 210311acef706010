"""Diffusion Policy's networks: shapes, the data-dependent build, encodings and the causal masks.

Networks are tiny (U-Net widths 8 and 16, a 16-wide two-layer transformer, an 8-channel image
encoder) on horizon-8 chunks of 2-d actions. The spatial-softmax readout and the time embedding
are checked against values worked out by hand; the transformer's masks by perturbing one
observation frame or one action and seeing which outputs move.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from polydiff_policy.module import MLPActionHead  # noqa: E402
from polydiff_policy.nets import (  # noqa: E402
    ConditionalUnet1D,
    ImageEncoder,
    PolicyDenoiser,
    TimeEmbedding,
    TransformerDenoiser,
)

B, A, OBS, TO, H = 3, 2, 5, 2, 8  # batch, action dim, obs dim, obs horizon, horizon


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_encoder() -> ImageEncoder:
    return ImageEncoder(channels=(8, 8, 8, 8), keypoints=4, features=6, groups=4)


def make_net(kind: str, *, image: bool = False, obs_dim: int = OBS, obs_horizon: int = TO, horizon: int = H,
             seed: int = 0, **kw) -> PolicyDenoiser:
    torch.manual_seed(seed)
    encoder = tiny_encoder() if image else None
    if kind == "unet":
        net = ConditionalUnet1D(down_dims=[8, 16], kernel_size=3, groups=4, time_dim=8, image_encoder=encoder, **kw)
    elif kind == "transformer":
        kw.setdefault("dropout", 0.0)
        net = TransformerDenoiser(dim=16, heads=2, layers=2, image_encoder=encoder, **kw)
    else:
        net = MLPActionHead(hidden=[16, 16], **kw)  # it takes no image encoder: the default one is built
    return net.build(A, obs_dim, obs_horizon, horizon, image=image).eval()


def make_cond(*, image: bool = False, obs_dim: int = OBS, obs_horizon: int = TO, seed: int = 1) -> dict:
    gen = _gen(seed)
    cond = {"obs": torch.rand(B, obs_horizon, obs_dim, generator=gen) * 2 - 1}
    if image:
        cond["image"] = torch.rand(B, obs_horizon, 3, 16, 16, generator=gen)
    return cond


def noisy(horizon: int = H, seed: int = 2) -> torch.Tensor:
    return torch.randn(B, horizon, A, generator=_gen(seed))


# --- shapes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("image", [False, True], ids=["lowdim", "image"])
@pytest.mark.parametrize("kind", ["unet", "transformer", "mlp"])
def test_output_shape_and_frame_features(kind, image):
    net = make_net(kind, image=image)
    cond = make_cond(image=image)
    with torch.no_grad():
        out = net(noisy(), torch.full((B,), 0.3), cond)
    assert out.shape == (B, H, A) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # The MLP head takes no image_encoder argument, so it always gets the default encoder.
    features = 0 if not image else 6 if kind != "mlp" else ImageEncoder().features
    assert net.frame_features == OBS + features
    assert net.encode_obs(cond).shape == (B, TO, net.frame_features)


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_image_only_policy_has_no_low_dim_features(kind):
    net = make_net(kind, image=True, obs_dim=0)
    cond = make_cond(image=True, obs_dim=0)
    assert net.frame_features == 6
    with torch.no_grad():
        assert net(noisy(), torch.full((B,), 0.3), cond).shape == (B, H, A)


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_a_scalar_time_is_broadcast_over_the_batch(kind):
    net = make_net(kind)
    cond, x = make_cond(), noisy()
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.tensor(0.4), cond), net(x, torch.full((B,), 0.4), cond))


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_output_depends_on_time_and_observations(kind):
    net = make_net(kind)
    cond, x = make_cond(), noisy()
    t = torch.full((B,), 0.3)
    with torch.no_grad():
        base = net(x, t, cond)
        assert not torch.allclose(base, net(x, torch.full((B,), 0.7), cond))
        assert not torch.allclose(base, net(x, t, {"obs": cond["obs"] + 0.5}))


# --- the condition encoding -------------------------------------------------------------------------
@pytest.mark.parametrize("image", [False, True], ids=["lowdim", "image"])
@pytest.mark.parametrize("kind", ["unet", "transformer", "mlp"])
def test_encode_obs_of_an_encoded_tensor_is_the_identity(kind, image):
    net = make_net(kind, image=image)
    cond = make_cond(image=image)
    encoded = net.encode_obs(cond)
    assert net.encode_obs(encoded) is encoded
    # The low-dimensional features come first, as they are.
    torch.testing.assert_close(encoded[..., :OBS], cond["obs"])
    x, t = noisy(), torch.full((B,), 0.6)
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, encoded), net(x, t, cond))


def test_encode_obs_runs_the_image_encoder_per_frame():
    net = make_net("unet", image=True)
    cond = make_cond(image=True)
    with torch.no_grad():
        encoded = net.encode_obs(cond)
        for b in range(B):
            for k in range(TO):
                torch.testing.assert_close(encoded[b, k, OBS:], net.image_encoder(cond["image"][b, k][None])[0])


def test_encode_obs_refusals():
    with pytest.raises(RuntimeError, match=r"build\(\.\.\.\) must be called"):
        ConditionalUnet1D(down_dims=[8, 16], groups=4).encode_obs({"obs": torch.zeros(1, TO, OBS)})
    net = make_net("unet")
    with pytest.raises(ValueError, match=rf"\(1, 3, {OBS}\) do not fit the network, which expects \(B, {TO}, {OBS}\)"):
        net.encode_obs({"obs": torch.zeros(1, 3, OBS)})
    with pytest.raises(ValueError, match=rf"expects \(B, {TO}, {OBS}\)"):
        net.encode_obs({"obs": torch.zeros(1, TO, OBS + 1)})
    with pytest.raises(TypeError, match="mapping with 'obs'"):
        net.encode_obs({"image": torch.zeros(1, TO, 3, 16, 16)})
    with pytest.raises(TypeError, match="mapping with 'obs'"):
        net.encode_obs([torch.zeros(1, TO, OBS)])
    image_net = make_net("unet", image=True)
    with pytest.raises(ValueError, match="observes images: the condition needs an 'image' entry"):
        image_net.encode_obs({"obs": torch.zeros(1, TO, OBS)})


def test_no_unconditional_model():
    with pytest.raises(NotImplementedError, match="cond_dropout must be 0"):
        make_net("unet").drop_cond(make_cond(), torch.ones(B, dtype=torch.bool))


# --- the build --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["unet", "transformer", "mlp"])
def test_build_again_with_the_same_sizes_changes_nothing(kind):
    net = make_net(kind)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ids = {k: id(p) for k, p in net.named_parameters()}
    assert net.build(A, OBS, TO, H) is net
    assert {k: id(p) for k, p in net.named_parameters()} == ids
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "sizes",
    [(A + 1, OBS, TO, H, False), (A, OBS + 1, TO, H, False), (A, OBS, TO + 1, H, False), (A, OBS, TO, 2 * H, False),
     (A, OBS, TO, H, True)],
    ids=["action_dim", "obs_dim", "obs_horizon", "horizon", "image"],
)
def test_build_again_with_other_sizes_is_an_error(sizes):
    net = make_net("unet")
    with pytest.raises(ValueError, match=rf"built for .* = \({A}, {OBS}, {TO}, {H}, False\), not"):
        net.build(*sizes[:4], image=sizes[4])


def test_build_refuses_non_positive_sizes():
    with pytest.raises(ValueError, match="must be positive"):
        ConditionalUnet1D(down_dims=[8, 16], groups=4).build(0, OBS, TO, H)
    with pytest.raises(ValueError, match="must be positive"):
        ConditionalUnet1D(down_dims=[8, 16], groups=4).build(A, 0, TO, H)  # no features and no image


def test_unbuilt_network_has_no_layers():
    net = ConditionalUnet1D(down_dims=[8, 16], groups=4)
    assert not net.built and not list(net.parameters())


@pytest.mark.parametrize("down_dims, horizon, divisor", [([8, 16], 7, 2), ([8, 16, 16], 6, 4), ([8, 8, 8, 8], 12, 8)])
def test_unet_horizon_must_be_divisible(down_dims, horizon, divisor):
    net = ConditionalUnet1D(down_dims=down_dims, groups=4)
    with pytest.raises(ValueError, match=rf"horizon {horizon} must be divisible by {divisor} for a U-Net with "
                                         rf"{len(down_dims)} levels"):
        net.build(A, OBS, TO, horizon)


@pytest.mark.parametrize("down_dims, horizon", [([8, 16], 6), ([8, 16, 16], 4), ([8, 16, 16], 12), ([8], 5)])
def test_unet_keeps_any_divisible_horizon(down_dims, horizon):
    net = ConditionalUnet1D(down_dims=down_dims, kernel_size=3, groups=4, time_dim=8).build(A, OBS, TO, horizon).eval()
    with torch.no_grad():
        assert net(noisy(horizon), torch.full((B,), 0.5), make_cond()).shape == (B, horizon, A)


def test_constructor_checks():
    with pytest.raises(ValueError, match="multiples of groups=8"):
        ConditionalUnet1D(down_dims=[8, 12])
    with pytest.raises(ValueError, match="non-empty"):
        ConditionalUnet1D(down_dims=[])
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConditionalUnet1D(down_dims=[8], kernel_size=4)
    with pytest.raises(ValueError, match="dim 10 must be divisible by heads 4"):
        TransformerDenoiser(dim=10, heads=4)
    with pytest.raises(ValueError, match="at least one layer"):
        MLPActionHead(hidden=[])
    with pytest.raises(ValueError, match="stem and three stage widths"):
        ImageEncoder(channels=(8, 8, 8))
    with pytest.raises(ValueError, match="even size"):
        TimeEmbedding(5)


# --- the transformer's causal masks -----------------------------------------------------------------
def test_causal_masks_by_hand():
    net = make_net("transformer", obs_horizon=2, horizon=4)
    x, o = True, False  # True: masked
    assert net.self_mask.tolist() == [[o, x, x, x], [o, o, x, x], [o, o, o, x], [o, o, o, o]]
    # Columns: the time token, then observation frames 0 and 1.
    assert net.memory_mask.tolist() == [[o, o, x], [o, o, o], [o, o, o], [o, o, o]]
    assert make_net("transformer", causal=False).self_mask is None


def _change_frame(cond: dict, frame: int) -> dict:
    obs = cond["obs"].clone()
    obs[:, frame] += 1.0
    return {"obs": obs}


def test_causal_action_does_not_see_later_observation_frames():
    """With the default MLP condition encoder (per token), action k depends only on frames 0..k."""
    net = make_net("transformer", obs_horizon=3)
    cond, x, t = make_cond(obs_horizon=3), noisy(), torch.full((B,), 0.4)
    with torch.no_grad():
        base = net(x, t, cond)
        for frame in (1, 2):
            moved = net(x, t, _change_frame(cond, frame))
            torch.testing.assert_close(moved[:, :frame], base[:, :frame], rtol=0, atol=1e-6)
            assert (moved[:, frame:] - base[:, frame:]).abs().amax(dim=(0, 2)).min() > 1e-4
        # Frame 0 is seen by every action.
        moved = net(x, t, _change_frame(cond, 0))
        assert (moved - base).abs().amax(dim=(0, 2)).min() > 1e-4


def test_causal_action_does_not_see_later_actions():
    net = make_net("transformer")
    cond, x, t = make_cond(), noisy(), torch.full((B,), 0.4)
    with torch.no_grad():
        base = net(x, t, cond)
        for k in (2, 5):
            changed = x.clone()
            changed[:, k] += 1.0
            moved = net(changed, t, cond)
            torch.testing.assert_close(moved[:, :k], base[:, :k], rtol=0, atol=1e-6)
            assert (moved[:, k:] - base[:, k:]).abs().amax() > 1e-4


def test_non_causal_transformer_sees_everything():
    net = make_net("transformer", causal=False)
    cond, x, t = make_cond(), noisy(), torch.full((B,), 0.4)
    with torch.no_grad():
        base = net(x, t, cond)
        assert (net(x, t, _change_frame(cond, 1))[:, 0] - base[:, 0]).abs().amax() > 1e-4
        changed = x.clone()
        changed[:, -1] += 1.0
        assert (net(changed, t, cond)[:, 0] - base[:, 0]).abs().amax() > 1e-4


def test_condition_encoder_layers_mix_the_frames_before_the_memory_mask():
    """What the masks do not guarantee: a transformer condition encoder (``encoder_layers`` > 0) is
    bidirectional, as in Chi et al., so action 0 learns of later frames through the memory."""
    net = make_net("transformer", encoder_layers=1)
    cond, x, t = make_cond(), noisy(), torch.full((B,), 0.4)
    with torch.no_grad():
        base = net(x, t, cond)
        assert (net(x, t, _change_frame(cond, 1))[:, 0] - base[:, 0]).abs().amax() > 1e-4
        # The action-to-action mask still holds.
        changed = x.clone()
        changed[:, 3] += 1.0
        torch.testing.assert_close(net(changed, t, cond)[:, :3], base[:, :3], rtol=0, atol=1e-6)


def test_unet_conditions_every_action_on_every_frame():
    net = make_net("unet")
    cond, x, t = make_cond(), noisy(), torch.full((B,), 0.4)
    with torch.no_grad():
        base = net(x, t, cond)
        assert (net(x, t, _change_frame(cond, 1))[:, 0] - base[:, 0]).abs().amax() > 1e-4


# --- the MLP head -------------------------------------------------------------------------------------
def test_mlp_head_ignores_the_noisy_input_and_time():
    net = make_net("mlp")
    cond = make_cond()
    with torch.no_grad():
        a = net(noisy(seed=3), torch.full((B,), 0.1), cond)
        b = net(torch.zeros(B, H, A), torch.full((B,), 0.9), cond)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, net.mlp(cond["obs"].reshape(B, -1)).reshape(B, H, A))
    assert net.prediction == "x0"


# --- encoders -----------------------------------------------------------------------------------------
def test_spatial_softmax_reads_out_the_bright_pixel_position():
    """With the backbone bypassed and a sharp 1x1 keypoint map, the readout is the pixel's (x, y)
    on [-1, 1]: x along the columns, y along the rows."""
    enc = ImageEncoder(channels=(4, 4, 4, 3), keypoints=1, features=2, groups=1)
    enc.stem, enc.stages = nn.Identity(), nn.Identity()
    with torch.no_grad():
        enc.keypoint_maps.weight.zero_()
        enc.keypoint_maps.weight[0, 0] = 50.0
        enc.keypoint_maps.bias.zero_()
        enc.out.weight.copy_(torch.eye(2))
        enc.out.bias.zero_()
        images = torch.zeros(2, 3, 9, 5)
        images[0, 0, 2, 4] = 1.0  # row 2 of 9, column 4 of 5
        images[1, 0, 8, 1] = 1.0
        out = enc(images)
    expected = torch.tensor([[-1 + 2 * 4 / 4, -1 + 2 * 2 / 8], [-1 + 2 * 1 / 4, -1 + 2 * 8 / 8]])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_uniform_keypoint_maps_read_out_the_image_centre():
    enc = tiny_encoder()
    with torch.no_grad():
        enc.keypoint_maps.weight.zero_()
        enc.keypoint_maps.bias.zero_()
        out = enc(torch.rand(3, 3, 16, 16, generator=_gen(0)))
    torch.testing.assert_close(out, enc.out.bias.detach().expand(3, -1), atol=1e-6, rtol=0)


def test_image_encoder_shape():
    with torch.no_grad():
        assert tiny_encoder()(torch.rand(5, 3, 24, 16)).shape == (5, 6)


def test_time_embedding_by_hand():
    emb = TimeEmbedding(4)
    emb.mlp = nn.Identity()
    # half = 2 frequencies: 1 and 10000^-1; the time is scaled by 1000.
    t = torch.tensor([0.0, 0.001])
    angles = torch.tensor([[0.0, 0.0], [1.0, 1e-4]])
    torch.testing.assert_close(emb(t), torch.cat([angles.sin(), angles.cos()], dim=-1))
    assert math.isclose(float(emb(torch.tensor([0.002]))[0, 0]), math.sin(2.0), rel_tol=1e-6)
