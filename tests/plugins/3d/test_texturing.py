"""Multi-view texturing: projections to and from UV space, seams, synchronised sampling, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")

from polydiff.samplers import StepInfo, sample  # noqa: E402
from polydiff.schedules import VPCosine  # noqa: E402
from polydiff_3d.render import orbit_cameras  # noqa: E402
from polydiff_3d.texturing import (  # noqa: E402
    SyncMVD, TexGen, TextureError, UVMesh, project_to_texture, render_texture, seam_disagreement, texture_mesh,
    unwrap, uv_demo_mesh, view_maps, write_textured,
)

T = 32


@pytest.fixture(scope="module")
def vase():
    return uv_demo_mesh(3, sections=16, rings=8)  # 256 faces


@pytest.fixture(scope="module")
def setup(vase):
    uv_mesh = UVMesh.from_trimesh(vase, name="vase")
    cameras = orbit_cameras(8, size=32)
    return uv_mesh, cameras, view_maps(uv_mesh, cameras)


def _smooth_texture() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, T), torch.linspace(0, 1, T), indexing="ij")
    return torch.stack([xx, yy, 0.5 * (xx + yy)]) * 1.6 - 0.8


def test_demo_mesh_has_cylindrical_uvs_and_outward_faces(vase):
    uv = np.asarray(vase.visual.uv)
    assert uv.min() == pytest.approx(0.0) and uv.max() == pytest.approx(1.0)
    # The seam column is duplicated: u = 0 and u = 1 at the same positions.
    at_0, at_1 = np.asarray(vase.vertices)[uv[:, 0] == 0], np.asarray(vase.vertices)[uv[:, 0] == 1]
    np.testing.assert_allclose(at_0, at_1, atol=1e-6)
    # v grows with height.
    np.testing.assert_array_equal(np.argsort(uv[:, 1], kind="stable"), np.argsort(vase.vertices[:, 1], kind="stable"))
    radial = (vase.face_normals[:, [0, 2]] * vase.triangles_center[:, [0, 2]]).sum(1)
    assert (radial > 0).all()
    assert np.linalg.norm(vase.vertices, axis=1).max() <= 1.0


def test_constant_texture_survives_render_and_projection(setup):
    _, _, maps = setup
    texture = torch.tensor([0.2, -0.4, 0.9]).reshape(3, 1, 1).expand(3, T, T).contiguous()
    views = render_texture(texture, maps, background=1.0)
    assert views.shape == (8, 3, 32, 32)
    assert (views.permute(0, 2, 3, 1)[~maps.mask] == 1.0).all()
    back, weight = project_to_texture(views, maps, T)
    seen = weight > 0
    assert seen.float().mean() > 0.5
    torch.testing.assert_close(back[:, seen], texture[:, seen])
    assert (back[:, ~seen] == 0).all()
    # Colours at 0 weight (grazing or background pixels) never reach the texture.
    poisoned = views.clone()
    poisoned.permute(0, 2, 3, 1)[maps.weight == 0] = 100.0
    torch.testing.assert_close(project_to_texture(poisoned, maps, T)[0], back)


def test_projection_of_renders_reproduces_texture_and_renders(setup):
    _, _, maps = setup
    texture = _smooth_texture()
    views = render_texture(texture, maps)
    back, weight = project_to_texture(views, maps, T)
    seen = weight > 0
    # A linear texture is reproduced up to the blur of sampling and splatting near chart borders.
    assert (back - texture)[:, seen].abs().mean() < 0.01
    again = render_texture(back, maps)
    fg = maps.mask[:, None].expand_as(views)
    assert (again - views)[fg].abs().mean() < 0.01
    assert (again[~fg] == 1.0).all()


def test_seam_disagreement(setup):
    _, _, maps = setup
    constant = render_texture(torch.full((3, T, T), 0.3), maps)
    assert seam_disagreement(constant, maps, T) == pytest.approx(0.0, abs=1e-12)
    one = render_texture(_smooth_texture(), maps)
    assert seam_disagreement(one, maps, T) < 1e-3
    two = one.clone()
    two[::2] = render_texture(-_smooth_texture(), maps)[::2]
    assert seam_disagreement(two, maps, T) > 0.05
    # Two views of constants a and b with equal weights on a texel deviate by (a - b)^2 / 4.
    a_b = torch.full((8, 3, 32, 32), 0.5)
    a_b[1::2] = -0.5
    assert 0 < seam_disagreement(a_b, maps, T) <= 0.25 + 1e-9


class _PerViewConstants(torch.nn.Module):
    """A toy x0 denoiser that predicts a different constant image for every view."""

    prediction = "x0"

    def __init__(self, views: int):
        super().__init__()
        self.values = torch.linspace(-0.8, 0.8, views)

    def forward(self, x, t, cond=None):
        return self.values.view(-1, 1, 1, 1).expand_as(x).clone()


def _sample_fn(schedule):
    def fn(start, known, callback, generator):
        x = start if isinstance(start, torch.Tensor) else schedule.prior(start, generator=generator)
        return sample(_PerViewConstants(x.shape[0]), schedule, x, sampler="ddim", steps=6, known=known,
                      callback=callback, generator=generator)

    return fn


def test_synchronised_sampling_agrees_across_views_and_keeps_the_background(setup):
    uv_mesh, cameras, maps = setup
    schedule = VPCosine()
    results = {}
    for mode in ("independent", "sync", "texgen"):
        results[mode] = texture_mesh(_sample_fn(schedule), uv_mesh, cameras, mode=mode, tex_size=48, background=1.0,
                                     generator=torch.Generator().manual_seed(0))
    independent = results["independent"]
    assert independent.seam > 0.05
    for mode in ("sync", "texgen"):
        assert results[mode].seam < 0.1 * independent.seam, mode
    for result in results.values():
        assert result.texture.shape == (3, 48, 48)
        assert torch.isfinite(result.texture).all()
        assert (result.views.permute(0, 2, 3, 1)[~maps.mask] == 1.0).all()
        assert 0.5 < result.coverage <= 1.0
    # The shared texture is a mean of the view constants: inside their range.
    sync = results["sync"]
    assert sync.texture.min() >= -0.8 - 1e-5 and sync.texture.max() <= 0.8 + 1e-5
    with pytest.raises(ValueError, match="valid: sync, texgen, independent"):
        texture_mesh(_sample_fn(schedule), uv_mesh, cameras, mode="average")


def _info(denoised: torch.Tensor, index: int, t: float, t_next: float) -> StepInfo:
    return StepInfo(index, 6, torch.tensor(t), torch.tensor(t_next), denoised, denoised)


def test_callbacks_keep_their_texture_and_texgen_push(setup):
    _, _, maps = setup
    views = render_texture(_smooth_texture(), maps, background=1.0)
    sync = SyncMVD(maps, tex_size=T, background=1.0)
    out = sync(_info(views, 0, 0.5, 0.4))
    assert sync.texture.shape == (3, T, T)
    fg = maps.mask[:, None].expand_as(views)
    assert (out - views)[fg].abs().mean() < 0.01  # already consistent views stay put
    schedule = VPCosine()
    plain = TexGen(maps, tex_size=T, background=1.0)
    pushed = TexGen(maps, tex_size=T, background=1.0, resample_noise=True, schedule=schedule, max_push=3.0)
    first = torch.full_like(views, 0.5)
    second = torch.full_like(views, -0.5)
    for callback in (plain, pushed):
        callback(_info(first, 0, 0.9, 0.5))
    r_plain = plain(_info(second, 1, 0.5, 0.0))
    r_pushed = pushed(_info(second, 1, 0.5, 0.0))
    # decay 0.5: the texture is (0.5 w 0.5 + w (-0.5)) / 1.5 w = -1/6 where both steps saw it.
    assert torch.allclose(plain.texture[:, plain.confidence > 0], torch.tensor(-1 / 6), atol=1e-5)
    # At the last step (t_next = 0) the push is 1: both return the render.
    torch.testing.assert_close(r_pushed, r_plain)
    r_mid = TexGen(maps, tex_size=T, resample_noise=True, schedule=schedule)
    r_mid(_info(first, 0, 0.9, 0.5))
    moved = r_mid(_info(second, 1, 0.5, 0.45))
    # Mid-way the push overshoots the render (lam > 1) away from the view's own -0.5.
    assert float(moved[fg].mean()) > float(r_plain[fg].mean()) + 0.05
    with pytest.raises(ValueError, match="schedule"):
        TexGen(maps, tex_size=T, resample_noise=True)


def test_meshes_without_uvs_or_faces_are_named():
    box = trimesh.creation.box()
    with pytest.raises(TextureError, match=r"crate.*--unwrap"):
        UVMesh.from_trimesh(box, name="crate")
    with pytest.raises(TextureError, match="empty.*no faces"):
        UVMesh.from_trimesh(trimesh.Trimesh(), name="empty")
    with pytest.raises(TextureError, match="no faces"):
        unwrap(trimesh.Trimesh())
    unwrapped = UVMesh.from_trimesh(unwrap(box), name="crate")
    assert unwrapped.faces.shape == (12, 3)
    assert unwrapped.uv.min() >= 0 and unwrapped.uv.max() <= 1


def test_glb_round_trip_and_no_overwrite(tmp_path: Path, setup, vase):
    uv_mesh, _, _ = setup
    texture = _smooth_texture()
    path = tmp_path / "vase.glb"
    write_textured(path, uv_mesh, texture)
    back = trimesh.load(path, force="mesh")
    assert len(back.faces) == len(uv_mesh.faces)
    image = back.visual.material.baseColorTexture
    assert image.size == (T, T)
    expected = ((texture + 1) / 2).clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
    np.testing.assert_allclose(np.asarray(image.convert("RGB"), dtype=float), expected, atol=1)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_textured(path, uv_mesh, texture)
    write_textured(path, vase, texture, overwrite=True)
    assert len(trimesh.load(path, force="mesh").faces) == len(vase.faces)
    write_textured(tmp_path / "vase.obj", vase, texture)
    obj = trimesh.load(tmp_path / "vase.obj", force="mesh")
    assert len(obj.faces) == len(vase.faces) and obj.visual.material.image.size == (T, T)
    with pytest.raises(TextureError, match="--unwrap"):
        write_textured(tmp_path / "box.glb", trimesh.creation.box(), texture)


def test_texture_noise_is_shared_where_views_see_the_same_texels(setup):
    from polydiff_3d.texturing import texture_noise

    uv_mesh, cameras, maps = setup
    noise = texture_noise(maps, 3, 16, torch.Generator().manual_seed(0))
    assert noise.shape == (maps.views, 3, maps.size, maps.size)
    fg = maps.mask[:, None].expand_as(noise)
    assert 0.8 < float(noise[fg].std()) < 1.2 and 0.8 < float(noise[~fg].std()) < 1.2  # unit variance kept
    # Pixels of two views that land in the same texel carry the same noise; independent noise would not.
    texel = (maps.uv.clamp(0, 1 - 1e-6) * 16).long()
    key = (texel[..., 1] * 16 + texel[..., 0])
    a, b = key[0][maps.mask[0]], key[1][maps.mask[1]]
    common = sorted(set(a.tolist()) & set(b.tolist()))
    assert len(common) > 5
    for k in common[:20]:
        va = noise[0, :, maps.mask[0]][:, a == k][:, 0]
        vb = noise[1, :, maps.mask[1]][:, b == k][:, 0]
        torch.testing.assert_close(va, vb)
