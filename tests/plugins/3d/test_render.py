"""The rasteriser: coverage, depth, barycentrics, occlusion, projections and previews, checked by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff_3d.render import (
    back_project, depth_image, interpolate, look_at, orbit_cameras, project, rasterize, render_points,
    shade_mesh, turntable_png,
)

# A camera on +z two units from the origin with a 90 degree view: focal = size / 2, so a point
# (x, y, 0) lands at column 16 + 8 x and row 16 - 8 y in a 32-pixel image.
HEAD_ON = look_at((0.0, 0.0, 2.0), fov_deg=90.0, size=32)
SQUARE_V = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
SQUARE_F = torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_look_at_is_a_rotation_looking_down_minus_z():
    camera = look_at((1.0, 2.0, 3.0), target=(0.5, 0.0, -1.0))
    R = camera.R.double()
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert torch.det(R) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(camera.position, torch.tensor([1.0, 2.0, 3.0]), atol=1e-5, rtol=0)
    pixels, depth = project(torch.tensor([[0.5, 0.0, -1.0]]), camera)  # the target: image centre
    torch.testing.assert_close(pixels[0], torch.tensor([32.0, 32.0]), atol=1e-4, rtol=0)
    assert float(depth[0]) == pytest.approx(math.sqrt(0.25 + 4 + 16), rel=1e-5)


def test_orbit_cameras_sit_on_the_sphere_at_even_azimuths():
    cameras = orbit_cameras(4, radius=2.0, elevation_deg=30.0)
    for k, camera in enumerate(cameras):
        p = camera.position
        assert float(p.norm()) == pytest.approx(2.0, rel=1e-5)
        assert float(p[1]) == pytest.approx(1.0, abs=1e-5)  # 2 sin 30
        assert math.degrees(math.atan2(float(p[0]), float(p[2]))) % 360 == pytest.approx(90.0 * k, abs=1e-3)


def test_square_covers_the_expected_pixels_at_the_expected_depth():
    frags = rasterize(SQUARE_V, SQUARE_F, HEAD_ON)
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:24, 8:24] = True  # the square spans columns and rows [8, 24)
    assert torch.equal(frags.mask, expected)
    assert set(frags.face[expected].tolist()) == {0, 1}
    torch.testing.assert_close(frags.depth[expected], torch.full((256,), 2.0))
    assert torch.isinf(frags.depth[~expected]).all()


def test_depth_of_a_tilted_plane_and_barycentrics_recover_the_ray_hit():
    # The plane z = -0.5 x seen from (0, 0, 3): a perspective-correct interpolation must put every
    # interpolated point on the plane and on the ray through its pixel centre.
    V = torch.tensor([[-1.0, -1.0, 0.5], [1.0, -1.0, -0.5], [1.0, 1.0, -0.5], [-1.0, 1.0, 0.5]])
    camera = look_at((0.0, 0.0, 3.0), fov_deg=60.0, size=32)
    frags = rasterize(V, SQUARE_F, camera)
    mask = frags.mask
    assert mask.sum() > 100
    torch.testing.assert_close(frags.bary[mask].sum(-1), torch.ones(int(mask.sum())))
    assert (frags.bary[mask] >= -1e-5).all()
    points = interpolate(frags, V)[mask]  # the fragments carry their faces
    torch.testing.assert_close(points[:, 2], -0.5 * points[:, 0], atol=1e-5, rtol=0)
    rows, cols = torch.nonzero(mask, as_tuple=True)
    pixels, depth = project(points, camera)
    torch.testing.assert_close(pixels, torch.stack([cols.float() + 0.5, rows.float() + 0.5], -1), atol=1e-3, rtol=0)
    torch.testing.assert_close(depth, frags.depth[mask], atol=1e-5, rtol=0)
    # The same through per-face-corner attributes.
    corner = V[SQUARE_F]
    torch.testing.assert_close(interpolate(frags, corner)[mask], points)


def test_nearer_triangle_wins_whatever_the_order():
    far = [[-1.0, -1.0, -1.0], [1.0, -1.0, -1.0], [0.0, 1.0, -1.0]]
    near = [[-0.25, -0.25, 0.5], [0.25, -0.25, 0.5], [0.0, 0.25, 0.5]]
    for order in ((far, near), (near, far)):
        V = torch.tensor(order[0] + order[1])
        frags = rasterize(V, torch.tensor([[0, 1, 2], [3, 4, 5]]), HEAD_ON)
        near_face = 1 if order[1] is near else 0
        # The image centre sees both; the near one (depth 1.5) wins.
        assert int(frags.face[16, 16]) == near_face
        assert float(frags.depth[16, 16]) == pytest.approx(1.5, rel=1e-5)
        # Row 19 (centre 19.5) is below the near triangle (rows up to 16 + 16 * 0.25 / 1.5) but
        # inside the far one (depth 3, rows up to 16 + 16 / 3).
        assert int(frags.face[19, 16]) == 1 - near_face
        assert float(frags.depth[19, 16]) == pytest.approx(3.0, rel=1e-5)


def test_back_projected_depth_lies_on_a_box():
    trimesh = pytest.importorskip("trimesh")
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.8))
    V, Fc = torch.tensor(box.vertices).float(), torch.tensor(box.faces)
    for camera in orbit_cameras(3, radius=2.5, elevation_deg=25.0, size=32):
        depth = depth_image(V, Fc, camera)
        points = back_project(depth, camera)
        assert points.shape == (int(torch.isfinite(depth).sum()), 3)
        assert len(points) > 50
        # On the surface: inside the box and on one of its faces.
        half = torch.tensor([0.5, 0.3, 0.4])
        assert (points.abs() <= half + 1e-4).all()
        assert ((points.abs() - half).abs().min(1).values < 1e-4).all()
        # project(back_project(depth)) returns to the pixel centres with the same depth.
        pixels, d = project(points, camera)
        rows, cols = torch.nonzero(torch.isfinite(depth), as_tuple=True)
        torch.testing.assert_close(pixels, torch.stack([cols.float() + 0.5, rows.float() + 0.5], -1), atol=1e-3, rtol=0)
        torch.testing.assert_close(d, depth[rows, cols], atol=1e-5, rtol=0)


def test_shading_points_and_turntable(tmp_path: Path):
    image = shade_mesh(SQUARE_V, SQUARE_F, HEAD_ON, colour=(1.0, 0.0, 0.0))
    assert image.shape == (32, 32, 3)
    torch.testing.assert_close(image[0, 0], torch.ones(3))  # white background
    torch.testing.assert_close(image[16, 16], torch.tensor([1.0, 0.0, 0.0]), atol=2e-3, rtol=0)  # head-on, fully lit
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    splats = render_points(points, HEAD_ON, radius_px=1.5)
    # The nearest point (depth 1) hides the one behind it and gets the nearest (darkest) colour;
    # the farthest (depth 2, at column and row 24, 8) the lightest.
    near_colour, far_colour = splats[16, 16], splats[8, 24]
    assert float(near_colour.sum()) < float(far_colour.sum()) < 3.0
    torch.testing.assert_close(splats[15, 15], near_colour)  # the 2 x 2 pixels round (16, 16)
    assert (splats[0, 0] == 1).all() and (splats[16, 20] == 1).all()
    trimesh = pytest.importorskip("trimesh")
    from PIL import Image

    mesh = trimesh.creation.icosphere(subdivisions=1)
    path = turntable_png(tmp_path / "t.png", mesh=mesh, views=3, size=24)
    assert Image.open(path).size == (72, 24)
    turntable_png(tmp_path / "p.png", points=np.random.default_rng(0).normal(size=(50, 3)), views=2, size=16)
    assert Image.open(tmp_path / "p.png").size == (32, 16)
    with pytest.raises(ValueError, match="exactly one"):
        turntable_png(tmp_path / "x.png")
    with pytest.raises(ValueError, match="no faces"):
        turntable_png(tmp_path / "x.png", mesh=trimesh.Trimesh())
    with pytest.raises(ValueError, match="non-empty"):
        turntable_png(tmp_path / "x.png", points=np.zeros((0, 3)))
