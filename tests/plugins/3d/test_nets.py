"""The point-voxel denoiser: scatter-mean voxelisation, trilinear devoxelisation, the set
structure of the network (permutation equivariance) and its class conditioning."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from polydiff_3d.nets import PointVoxelDenoiser, devoxelize, voxelize  # noqa: E402

torch.set_num_threads(1)


def _tiny(num_classes: int = 3) -> PointVoxelDenoiser:
    torch.manual_seed(0)
    net = PointVoxelDenoiser(num_classes=num_classes, channels=(8, 8), resolutions=(4, 4), emb_dim=16).eval()
    # The head starts at zero (the network predicts 0); random weights make the checks meaningful.
    for p in net.head[-1].parameters():
        torch.nn.init.normal_(p, std=0.5)
    return net


def test_voxelize_averages_the_points_of_each_cell():
    # Two clouds of three points in a 2^3 grid; features of the second cloud are the negatives.
    coords = torch.tensor([[[0.1, 0.1, 0.1], [0.2, 0.3, 0.4], [0.9, 0.1, 0.6]]]).repeat(2, 1, 1)
    features = torch.tensor([[[1.0, 3.0, 5.0], [10.0, 20.0, 30.0]]])  # (1, C=2, N=3)
    features = torch.cat([features, -features])
    grid = voxelize(features, coords, 2)
    assert grid.shape == (2, 2, 2, 2, 2)
    expected = torch.zeros(2, 2, 2, 2)
    expected[:, 0, 0, 0] = torch.tensor([2.0, 15.0])  # the first two points share cell (0, 0, 0)
    expected[:, 1, 0, 1] = torch.tensor([5.0, 30.0])  # the third sits alone in cell (x=1, y=0, z=1)
    torch.testing.assert_close(grid[0], expected)
    torch.testing.assert_close(grid[1], -expected)  # no leak between the clouds of a batch


def test_devoxelize_reads_constants_and_cell_centres():
    coords = torch.rand(2, 50, 3, generator=torch.Generator().manual_seed(0))
    constant = torch.full((2, 3, 4, 4, 4), 2.5)
    torch.testing.assert_close(devoxelize(constant, coords), torch.full((2, 3, 50), 2.5))
    # At a cell centre the trilinear read is that cell's value, in [x, y, z] order.
    r = 3
    grid = torch.arange(r**3, dtype=torch.float32).reshape(1, 1, r, r, r)
    cells = torch.tensor([[0, 0, 0], [2, 0, 1], [1, 2, 0], [0, 1, 2]])
    centres = ((cells.float() + 0.5) / r)[None]
    out = devoxelize(grid, centres)
    assert out.shape == (1, 1, 4)
    torch.testing.assert_close(out[0, 0], torch.tensor([float(grid[0, 0, i, j, k]) for i, j, k in cells.tolist()]))
    # Voxelising points at cell centres and reading them back returns their features.
    features = torch.tensor([[[1.0, -2.0, 3.0, 4.0]]])
    back = devoxelize(voxelize(features, centres, r), centres)
    torch.testing.assert_close(back, features)


def test_output_shape_and_permutation_equivariance():
    net = _tiny()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 40, 3, generator=g)
    t = torch.tensor([0.3, 0.8])
    cond = torch.tensor([0, 2])
    with torch.no_grad():
        out = net(x, t, cond)
        perm = torch.randperm(40, generator=g)
        out_perm = net(x[:, perm], t, cond)
    assert out.shape == (2, 40, 3)
    assert out.abs().max() > 1e-3  # not a trivially zero output
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)


def test_null_class_and_drop_cond():
    net = _tiny(num_classes=3)
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        null = net.embed(t, None)
        explicit_null = net.embed(t, torch.tensor([3, 3]))
        real = net.embed(t, torch.tensor([0, 1]))
    torch.testing.assert_close(null, explicit_null)
    assert not torch.allclose(null[0], real[0])
    assert not torch.allclose(real[0], real[1])
    dropped = net.drop_cond(torch.tensor([0, 1, 2]), torch.tensor([True, False, True]))
    assert dropped.tolist() == [3, 1, 3]
    assert net.drop_cond(None, torch.tensor([True])) is None
    x = torch.randn(2, 20, 3)
    with torch.no_grad():
        assert not torch.allclose(net(x, t, None), net(x, t, torch.tensor([0, 0])))


@pytest.mark.parametrize("cond, match", [
    (torch.tensor([0, 4]), r"\[0, 3\]"),
    (torch.tensor([-1, 0]), "class indices"),
    (torch.tensor([0, 1, 2]), "one class index per cloud"),
])
def test_bad_cond_raises(cond, match):
    net = _tiny(num_classes=3)
    with pytest.raises(ValueError, match=match):
        net(torch.randn(2, 20, 3), torch.tensor([0.5, 0.5]), cond)


def test_unconditional_refuses_a_cond_and_bad_shapes_raise():
    net = _tiny(num_classes=0)
    x = torch.randn(2, 20, 3)
    with torch.no_grad():
        assert net(x, torch.tensor([0.2, 0.4])).shape == (2, 20, 3)
    with pytest.raises(ValueError, match="unconditional"):
        net(x, torch.tensor([0.2, 0.4]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        net(torch.randn(2, 20, 2), torch.tensor([0.2, 0.4]))
    with pytest.raises(ValueError, match="same"):
        PointVoxelDenoiser(channels=(8, 8), resolutions=(4,))
    with pytest.raises(ValueError, match="non-negative"):
        PointVoxelDenoiser(num_classes=-1)


def test_scalar_time_is_broadcast():
    net = _tiny()
    x = torch.randn(2, 20, 3)
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.tensor(0.4), None), net(x, torch.tensor([0.4, 0.4]), None))
