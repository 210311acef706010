"""Evaluation of point clouds: the unit box, set metrics, the baselines and the ``evaluate`` command."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("scipy")
pytest.importorskip("ot")

from polydiff.cli import main  # noqa: E402
from polydiff_3d.evaluation import (  # noqa: E402
    completion_chamfer,
    evaluate_command,
    evaluate_sets,
    medoid,
    memorisation_baseline,
    prepare_cloud,
    retrieve_completion,
    template_baseline,
    unit_box,
)


def _sphere(n: int, seed: int) -> np.ndarray:
    p = np.random.default_rng(seed).normal(size=(n, 3))
    return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)


def _cube(n: int, seed: int) -> np.ndarray:
    """Points on the surface of the cube [-1, 1]^3."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-1, 1, size=(n, 3))
    axis = rng.integers(0, 3, n)
    p[np.arange(n), axis] = rng.choice([-1.0, 1.0], n)
    return p.astype(np.float32)


def test_unit_box_by_hand():
    cloud = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 0.0], [1.0, 4.0, 2.0]])
    # bounding box (0, 0, 0)-(2, 4, 2): centre (1, 2, 1), longest side 4, so halve it
    expected = np.array([[-0.5, -1.0, -0.5], [0.5, -0.5, -0.5], [0.0, 1.0, 0.5]])
    np.testing.assert_allclose(unit_box(cloud), expected, atol=1e-7)
    np.testing.assert_allclose(unit_box(cloud * 7 + 3), expected, atol=1e-6)
    with pytest.raises(ValueError, match="coincide"):
        unit_box(np.ones((4, 3)))


def test_prepare_cloud_checks():
    cloud = _sphere(100, 0) * 5 + 2
    prepared = prepare_cloud(cloud, 50, seed=1)
    assert prepared.shape == (50, 3)
    assert np.abs(prepared).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(prepared, prepare_cloud(cloud, 50, seed=1))
    with pytest.raises(ValueError, match="scan.ply: 100 points, the protocol needs 200"):
        prepare_cloud(cloud, 200, name="scan.ply")
    cloud[3, 0] = np.nan
    with pytest.raises(ValueError, match="bad.npy: NaN"):
        prepare_cloud(cloud, 50, name="bad.npy")
    with pytest.raises(ValueError, match=r"expected \(N, 3\)"):
        prepare_cloud(np.zeros((10, 2)), 5)


def test_identical_sets_and_separated_sets():
    spheres = [unit_box(_sphere(128, s)) for s in range(4)]
    cubes = [unit_box(_cube(128, s)) for s in range(4)]
    same = evaluate_sets(spheres, spheres, emd_points=None)
    assert same["mmd-cd"] == pytest.approx(0.0, abs=1e-6)  # float32 distances
    assert same["cov-cd"] == 1.0
    # EMD compares seeded random subsets (different ones for the two sets); with subsets as large as
    # the clouds they are the same points and the distances vanish.
    same = evaluate_sets(spheres[:2], spheres[:2], emd_points=128)
    assert same["mmd-emd"] == pytest.approx(0.0, abs=1e-6) and same["cov-emd"] == 1.0
    apart = evaluate_sets(spheres, cubes, emd_points=128)
    assert apart["1-nna-cd"] == 1.0 and apart["1-nna-emd"] == 1.0
    assert apart["mmd-cd"] > 0.01
    assert set(evaluate_sets(spheres, cubes, emd_points=None)) == {"1-nna-cd", "cov-cd", "mmd-cd"}


def test_memorisation_baseline_draws_distinct_training_clouds():
    train = [_sphere(16, s) for s in range(10)]
    drawn = memorisation_baseline(train, 6, seed=3)
    ids = {id(c) for c in drawn}
    assert len(drawn) == 6 and len(ids) == 6 and ids <= {id(c) for c in train}
    assert len(memorisation_baseline(train, 25)) == 10


def test_template_baseline_jitters_the_medoid():
    base = _sphere(64, 0)
    # B lies between A and C, so it has the least mean Chamfer distance to the others.
    a, b, c = base, base * np.array([1.0, 1.3, 1.0], np.float32), base * np.array([1.0, 1.6, 1.0], np.float32)
    clouds = [unit_box(a), unit_box(b), unit_box(c)]
    assert medoid(clouds) is clouds[1]
    exact = template_baseline(clouds, 2, jitter=0.0)
    for cloud in exact:
        np.testing.assert_allclose(cloud, clouds[1], atol=1e-6)
    jittered = template_baseline(clouds, 3, jitter=0.02, seed=1)
    assert len(jittered) == 3
    for cloud in jittered:
        offset = np.abs(cloud - clouds[1])
        assert 0.001 < offset.mean() < 0.05
    assert not np.allclose(jittered[0], jittered[1])


def test_retrieve_completion_finds_the_source():
    train = [_sphere(200, 0), _cube(200, 1), _sphere(200, 2) * np.array([1.0, 0.5, 2.0], np.float32),
             _cube(200, 3) * 0.5]
    for index, source in enumerate(train):
        partial = source[source[:, 0] > 0.1 * np.abs(source[:, 0]).max()]  # one side only
        cloud, found = retrieve_completion(partial, train)
        assert found == index
        assert cloud is not None and np.array_equal(cloud, source)


def test_completion_chamfer():
    truth = _sphere(100, 0) * 10
    assert completion_chamfer(truth, truth) == pytest.approx(0.0, abs=1e-12)
    # Shifting by 1 in the truth's units is 0.1 in its unit box (half side 10): both directions' means of 0.01.
    assert completion_chamfer(truth + np.array([1.0, 0, 0]), truth) <= 0.02 + 1e-9
    assert completion_chamfer(truth + np.array([1.0, 0, 0]), truth) > 0.005


def _folder(path: Path, clouds) -> Path:
    path.mkdir(parents=True)
    for k, cloud in enumerate(clouds):
        np.save(path / f"c{k:02d}.npy", cloud)
    return path


def _run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = evaluate_command([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def test_evaluate_command_table_json_and_bad_files(tmp_path: Path):
    gen = _folder(tmp_path / "gen", [_sphere(200, s) * 3 + 1 for s in range(4)])
    ref = _folder(tmp_path / "ref", [_cube(200, s) for s in range(4)])
    train = _folder(tmp_path / "train", [_cube(200, 10 + s) for s in range(5)])
    report = tmp_path / "table.json"
    status, printed, err = _run([gen, "--reference", ref, "--train", train, "--points", 128, "--emd-points", 16,
                                 "--json", report])
    assert status == 0, err
    assert "4 generated vs 4 reference clouds; 128 points" in printed
    lines = printed.splitlines()
    assert lines[1].split() == ["row", "1-nna-cd", "cov-cd", "mmd-cd", "1-nna-emd", "cov-emd", "mmd-emd"]
    assert lines[2].split()[:2] == ["generated", "1.0000"]  # spheres against cubes
    assert any(line.startswith("training shapes (memorisation)") for line in lines)
    assert any(line.startswith("jittered template") for line in lines)
    saved = json.loads(report.read_text())
    assert saved["protocol"]["points"] == 128 and saved["protocol"]["clouds"] == 4
    assert saved["rows"]["generated"]["1-nna-cd"] == 1.0
    # The report is not overwritten without --overwrite.
    before = report.read_text()
    status, _, err = _run([gen, "--reference", ref, "--points", 128, "--emd-points", 0, "--json", report])
    assert status == 1 and "--overwrite" in err and str(report) in err
    assert report.read_text() == before
    # A NaN cloud is named, the rest still evaluated, and the status says a file failed.
    broken = np.array(_sphere(200, 9))
    broken[0] = np.nan
    np.save(gen / "broken.npy", broken)
    status, printed, err = _run([gen, "--reference", ref, "--points", 128, "--emd-points", 0])
    assert status == 1
    assert "broken.npy" in err
    assert "generated" in printed and "1-nna-emd" not in printed


def test_evaluate_through_the_cli_needs_two_clouds(tmp_path: Path):
    gen = _folder(tmp_path / "gen", [_sphere(200, 0)])
    ref = _folder(tmp_path / "ref", [_cube(200, s) for s in range(3)])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["3d", "evaluate", str(gen), "--reference", str(ref), "--points", "128"])
    assert status == 1
    assert "need at least two usable clouds" in err.getvalue() and str(gen) in err.getvalue()


def test_a_generate_folder_is_read_for_its_clouds_not_its_meshes(tmp_path):
    import trimesh

    from polydiff_3d.evaluation import read_cloud_folder
    from polydiff_3d.pointio import write_points

    rng = np.random.default_rng(0)
    for i in range(3):
        write_points(tmp_path / f"shape_{i:03d}.ply", rng.normal(size=(300, 3)).astype(np.float32))
        trimesh.creation.box().export(tmp_path / f"shape_{i:03d}_mesh.obj")
    clouds, errors = read_cloud_folder(tmp_path, 128)
    assert len(clouds) == 3 and not errors
    meshes_only = tmp_path / "meshes"
    meshes_only.mkdir()
    for i in range(2):
        trimesh.creation.box().export(meshes_only / f"box_{i}.obj")
    clouds, errors = read_cloud_folder(meshes_only, 128)
    assert len(clouds) == 2 and not errors
    assert np.allclose(np.abs(clouds[0]).max(0), 1.0, atol=1e-5)  # cube surface points in the unit box
