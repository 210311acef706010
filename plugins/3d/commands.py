"""The 3D plugin's own commands: ``make-demo-data``, ``generate``, ``complete`` and ``texture``.

Each is ``fn(argv) -> exit status``, run as ``polydiff 3d <command> ...``:

* ``make-demo-data OUT`` writes the procedural shape families split-first
  (``OUT/shapes/<split>/<category>/*.ply``), labelled procedural textures
  (``OUT/textures/<label>/*.png``), a UV-mapped mesh to texture, partial scans of test shapes and,
  when Debian's ``libcgal-demo`` is installed, partial scans of its real meshes.
* ``generate --ckpt S.ckpt -n 16 --category chair -o gen/`` writes each generated cloud as PLY,
  its reconstructed mesh, and a PNG turntable.
* ``complete --ckpt S.ckpt --partial scan.ply -o completed.ply`` completes partial scans (several
  ``--partial`` may be given) or a depth image (``--depth d.png --intrinsics fx fy cx cy``).
* ``texture --mesh model.obj --ckpt tex.ckpt --views 8 -o textured.glb`` textures a UV-mapped mesh
  by synchronized multi-view denoising.

Inputs are only read; outputs that exist are refused unless ``--overwrite`` is given.
Exit status: 0 success, 1 a file could not be used or a request in a batch failed (named, with
the reason; the other requests still run), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["make_demo_data", "generate", "complete", "texture", "load_point_model", "load_texture_model"]


def _fail(message: str) -> None:
    print(f"polydiff 3d: error: {message}", file=sys.stderr)


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> str | None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        return f"{', '.join(existing[:3])}{' and more' if len(existing) > 3 else ''} exist(s); pass --overwrite to replace"
    return None


# --- make-demo-data ------------------------------------------------------------------------------
def make_demo_data(argv: Sequence[str]) -> int:
    """``polydiff 3d make-demo-data OUT [--per-category 1000] [--textures-per-label 300]``."""
    parser = argparse.ArgumentParser(
        prog="polydiff 3d make-demo-data",
        description="Write the offline demo corpus: procedural shape families (chairs, tables, lamps, vases, mugs) "
                    "as PLY meshes in OUT/shapes/<split>/<category>/, labelled procedural textures in "
                    "OUT/textures/<label>/, a UV-mapped mesh OUT/uv_vase.obj, partial scans of test shapes in "
                    "OUT/scans/, and partial scans of Debian libcgal-demo's meshes in OUT/scans/cgal/ when that "
                    "package is installed. Prints a JSON summary.",
    )
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--per-category", type=int, default=1000, help="shapes per category (80/10/10 split)")
    parser.add_argument("--categories", nargs="+", default=None, help="only these categories")
    parser.add_argument("--textures-per-label", type=int, default=300, help="texture images per label")
    parser.add_argument("--texture-size", type=int, default=64, help="texture image side in pixels")
    parser.add_argument("--scans", type=int, default=8, help="partial scans of test shapes to write")
    parser.add_argument("--cgal-scans", type=int, default=8,
                        help="partial scans of libcgal-demo's meshes to write (0: none; none when it is not installed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing corpus in OUT")
    args = parser.parse_args(list(argv))
    if args.per_category < 10:
        parser.error("--per-category must be at least 10 (each split needs shapes)")
    from .formats import write_demo_collection
    from .procedural import CATEGORIES

    unknown = [c for c in args.categories or [] if c not in CATEGORIES]
    if unknown:
        parser.error(f"unknown categories {', '.join(unknown)}; valid: {', '.join(CATEGORIES)}")
    out: Path = args.out
    started = time.perf_counter()
    try:
        counts = write_demo_collection(out / "shapes", args.per_category, categories=args.categories, seed=args.seed,
                                       overwrite=args.overwrite)
    except FileExistsError as error:
        _fail(f"{error} (pass --overwrite)")
        return 1
    summary: dict[str, Any] = {"root": str(out), "shapes": str(out / "shapes"), "splits": counts,
                               "categories": list(args.categories or CATEGORIES)}
    summary.update(_write_demo_extras(out, args))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=2))
    return 0


def _write_demo_extras(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Textures, the UV mesh and partial scans (each part only when its module is present)."""
    import numpy as np

    from .formats import load_mesh, scan_collection
    from .pointio import write_points
    from .scans import cgal_meshes, partial_from_mesh

    extras: dict[str, Any] = {}
    if args.textures_per_label > 0:
        from .images import write_texture_collection

        write_texture_collection(out / "textures", args.textures_per_label, size=args.texture_size, seed=args.seed,
                                 overwrite=args.overwrite)
        extras["textures"] = str(out / "textures")
    from .texturing import uv_demo_mesh

    uv = uv_demo_mesh(seed=args.seed)
    uv_path = out / "uv_vase.obj"
    uv.export(uv_path)
    extras["uv_mesh"] = str(uv_path)
    scans = out / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    test = scan_collection(out / "shapes", split="test")
    written = []
    for k in range(min(args.scans, len(test))):
        shape = test[(k * max(1, len(test) // max(1, args.scans))) % len(test)]
        mesh = load_mesh(shape.path)
        azimuth = float(rng.uniform(0, 2 * np.pi))
        eye = np.array([np.cos(azimuth), 0.6, np.sin(azimuth)]) * 3.0 * float(mesh.scale)
        partial = partial_from_mesh(mesh, eye=eye + mesh.centroid, seed=args.seed + k)
        path = scans / f"{shape.category}_{shape.id}.ply"
        write_points(path, partial, overwrite=True)
        written.append(str(path))
    extras["scans"] = written
    cgal = []
    for k, path in enumerate(cgal_meshes()[: args.cgal_scans] if args.cgal_scans > 0 else []):
        # cgal_meshes unpacks the package's archive and lists only meshes trimesh loads.
        mesh = load_mesh(path)
        target = scans / "cgal" / f"{path.stem}.ply"
        target.parent.mkdir(parents=True, exist_ok=True)
        eye = mesh.centroid + np.array([0.0, 0.5, 1.0]) * 3.0 * float(mesh.scale)
        write_points(target, partial_from_mesh(mesh, eye=eye, seed=args.seed + k), overwrite=True)
        cgal.append(str(target))
    extras["cgal_scans"] = cgal
    return extras


# --- models --------------------------------------------------------------------------------------
def load_point_model(path: Path | str, device: str = "cpu") -> Any:
    """A trained point-cloud model with its data description, in eval mode.

    Raises:
        polydiff.checkpoint.CheckpointError: not a point-cloud checkpoint of this plugin.
    """
    from .module import PointDiffusion

    return _load(path, PointDiffusion, "shapes", "textures", "a texture-denoiser checkpoint, not a point-cloud model "
                 "(use it with 'polydiff 3d texture')").to(device).eval()


def load_texture_model(path: Path | str, device: str = "cpu") -> Any:
    """A trained texture image denoiser with its labels, in eval mode.

    Raises:
        polydiff.checkpoint.CheckpointError: not a texture checkpoint of this plugin.
    """
    from .module import TextureDiffusion

    return _load(path, TextureDiffusion, "textures", "shapes", "a point-cloud checkpoint, not a texture denoiser "
                 "(use it with 'polydiff 3d generate' or 'complete')").to(device).eval()


def _load(path: Path | str, cls: type, key: str, other_key: str, other: str) -> Any:
    """The plugin's module of class ``cls`` (carrying record ``key``) from a checkpoint; a checkpoint
    of the plugin's other kind (carrying ``other_key``) is named as such."""
    from polydiff.checkpoint import CheckpointError, load_checkpoint, load_module

    try:
        return load_module(path, plugin="3d", expect=cls, require=(key,))
    except CheckpointError:
        try:
            is_other = isinstance(load_checkpoint(path, plugin="3d").get(other_key), dict)
        except CheckpointError:
            is_other = False
        if is_other:
            raise CheckpointError(f"{path} is {other}") from None
        raise


def _sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--sampler", default=None, help="sampler (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _write_shape(points, stem: Path, *, mesh: bool, render: bool, resolution: int, overwrite: bool) -> list[str]:
    """Write a cloud as STEM.ply, its surface as STEM_mesh.obj and a turntable STEM.png."""
    from .pointio import write_points
    from .reconstruct import reconstruct_surface, write_mesh
    from .render import turntable_png

    written = [str(write_points(stem.with_suffix(".ply"), points, overwrite=overwrite))]
    surface = None
    if mesh:
        try:  # the surface through the points; a thin or open cloud has no inside to close
            surface = reconstruct_surface(points, resolution=resolution, method="closing")
        except ValueError:
            surface = reconstruct_surface(points, resolution=resolution, method="distance")
        written.append(str(write_mesh(stem.parent / f"{stem.name}_mesh.obj", surface, overwrite=overwrite)))
    if render:
        png = stem.with_suffix(".png")
        if png.exists() and not overwrite:
            raise FileExistsError(f"{png} exists; pass --overwrite to replace")
        turntable_png(png, mesh=surface, points=None if surface is not None else points, views=6, size=128)
        written.append(str(png))
    return written


# --- generate ------------------------------------------------------------------------------------
def generate(argv: Sequence[str]) -> int:
    """``polydiff 3d generate --ckpt S.ckpt -n 16 [--category chair] -o gen/``."""
    parser = argparse.ArgumentParser(
        prog="polydiff 3d generate",
        description="Generate point clouds and write each as PLY points (OUT/<category>_NNN.ply), a reconstructed "
                    "mesh (OUT/<category>_NNN_mesh.obj: marching cubes on the points' distance field, scikit-image) "
                    "and a PNG turntable, in the data's own units.",
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="a point-cloud checkpoint of this plugin")
    parser.add_argument("-n", "--count", type=int, default=16, help="clouds to generate")
    parser.add_argument("--category", default=None, help="category to generate (class-conditional models)")
    parser.add_argument("--points", type=int, default=None, help="points per cloud (default: the training count)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    parser.add_argument("--no-mesh", action="store_true", help="skip surface reconstruction")
    parser.add_argument("--no-render", action="store_true", help="skip the PNG turntables")
    parser.add_argument("--mesh-resolution", type=int, default=64, help="marching-cubes grid side")
    parser.add_argument("--batch", type=int, default=16, help="clouds sampled at once")
    _sampling_args(parser)
    args = parser.parse_args(list(argv))
    if args.count < 1:
        parser.error("-n must be at least 1")
    import torch

    from polydiff.checkpoint import CheckpointError

    try:
        model = load_point_model(args.ckpt)
        model.class_index(args.category)
    except (CheckpointError, ValueError) as error:
        _fail(str(error))
        return 1
    prefix = args.category or "shape"
    stems = [args.out / f"{prefix}_{i:03d}" for i in range(args.count)]
    problem = _refuse_existing([s.with_suffix(".ply") for s in stems], args.overwrite)
    if problem:
        _fail(problem)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    failed, written = 0, []
    started = time.perf_counter()
    for first in range(0, args.count, args.batch):
        count = min(args.batch, args.count - first)
        clouds = model.generate(count, category=args.category, points=args.points, guidance=args.guidance,
                                steps=args.steps, sampler=args.sampler, generator=generator)
        for k, cloud in enumerate(clouds.cpu().numpy()):
            stem = stems[first + k]
            try:
                written += _write_shape(cloud, stem, mesh=not args.no_mesh, render=not args.no_render,
                                        resolution=args.mesh_resolution, overwrite=args.overwrite)
            except (ValueError, OSError) as error:
                _fail(f"{stem}: {error}")
                failed += 1
    print(json.dumps({"written": len(written), "out": str(args.out), "failed": failed,
                      "seconds": round(time.perf_counter() - started, 1)}))
    return 1 if failed else 0


# --- complete ------------------------------------------------------------------------------------
def complete(argv: Sequence[str]) -> int:
    """``polydiff 3d complete --ckpt S.ckpt --partial scan.ply [--partial b.ply] -o completed.ply``."""
    parser = argparse.ArgumentParser(
        prog="polydiff 3d complete",
        description="Complete partial point clouds (PVD's completion through the core's known-values mask: the "
                    "observed points stay fixed while the rest of the cloud is denoised). Inputs: point files "
                    "(--partial, repeatable) in the training data's units and frame, or a depth image (--depth with "
                    "--intrinsics fx fy cx cy). One input writes -o FILE.ply; several write -o FOLDER/<name>.ply.",
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="a point-cloud checkpoint of this plugin")
    parser.add_argument("--partial", type=Path, action="append", default=[], help="a partial scan (PLY/XYZ/NPY)")
    parser.add_argument("--depth", type=Path, default=None, help="a depth image (16-bit PNG in mm, or NPY in metres)")
    parser.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"), default=None)
    parser.add_argument("--depth-scale", type=float, default=None, help="metres per depth unit")
    parser.add_argument("--category", default=None, help="category (class-conditional models)")
    parser.add_argument("--points", type=int, default=None, help="points of the completed cloud")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--mesh", action="store_true", help="also write a reconstructed mesh and a PNG")
    _sampling_args(parser)
    args = parser.parse_args(list(argv))
    if not args.partial and args.depth is None:
        parser.error("give --partial FILE (repeatable) or --depth IMAGE --intrinsics FX FY CX CY")
    if args.depth is not None and args.intrinsics is None:
        parser.error("--depth needs --intrinsics FX FY CX CY")
    import numpy as np
    import torch

    from polydiff.checkpoint import CheckpointError

    from .pointio import PointError, read_points
    from .scans import DepthError, backproject_depth, read_depth

    try:
        model = load_point_model(args.ckpt)
        model.class_index(args.category)
    except (CheckpointError, ValueError) as error:
        _fail(str(error))
        return 1
    inputs: list[tuple[str, Any]] = []
    failed = 0
    for path in args.partial:
        try:
            inputs.append((path.stem, read_points(path)))
        except PointError as error:
            _fail(str(error))
            failed += 1
    if args.depth is not None:
        try:
            depth = read_depth(args.depth, depth_scale=args.depth_scale)
            points = backproject_depth(depth, *args.intrinsics)
            if len(points) < 16:
                raise DepthError(f"{args.depth}: only {len(points)} valid depth pixels")
            inputs.append((args.depth.stem, points))
        except DepthError as error:
            _fail(str(error))
            failed += 1
    if not inputs:
        return 1
    several = len(args.partial) + (args.depth is not None) > 1
    if several and args.out.suffix:
        parser.error("several inputs are written to a folder: give -o a folder name without a suffix")
    if not several and args.out.suffix.lower() != ".ply":
        parser.error("-o must name a .ply file for one input")
    targets = [(args.out / f"{name}_completed.ply") if several else args.out for name, _ in inputs]
    problem = _refuse_existing(targets, args.overwrite)
    if problem:
        _fail(problem)
        return 1
    generator = torch.Generator().manual_seed(args.seed)
    done = model.complete([torch.as_tensor(np.asarray(p, dtype=np.float32)) for _, p in inputs],
                          category=args.category, points=args.points, guidance=args.guidance, steps=args.steps,
                          generator=generator)
    completed = 0
    for target, cloud in zip(targets, done.cpu().numpy()):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _write_shape(cloud, target.with_suffix(""), mesh=args.mesh, render=args.mesh, resolution=64,
                         overwrite=args.overwrite)
            completed += 1
        except (ValueError, OSError) as error:
            _fail(f"{target}: {error}")
            failed += 1
    print(json.dumps({"completed": completed, "out": str(args.out), "failed": failed}))
    return 1 if failed else 0


# --- texture -------------------------------------------------------------------------------------
def texture(argv: Sequence[str]) -> int:
    """``polydiff 3d texture --mesh model.obj --ckpt tex.ckpt --views 8 -o textured.glb``."""
    parser = argparse.ArgumentParser(
        prog="polydiff 3d texture",
        description="Texture a UV-mapped mesh by synchronized multi-view denoising (SyncMVD): V views around the "
                    "mesh are denoised together by the image denoiser, and at every step their clean estimates are "
                    "blended in the mesh's UV texture (weighted by viewing angle) and rendered back. --mode texgen "
                    "keeps a persistent RGB texture updated per step (TexGen); --mode independent denoises each "
                    "view alone and projects afterwards (the baseline). Writes a GLB (or OBJ + MTL + PNG), the "
                    "texture PNG and a PNG of the views; prints the seam disagreement.",
    )
    parser.add_argument("--mesh", type=Path, required=True, help="a UV-mapped mesh (OBJ/GLB/PLY)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", type=Path, help="a texture-denoiser checkpoint of this plugin")
    source.add_argument("--diffusers", type=Path,
                        help="a local diffusers UNet2DModel folder (or a pipeline folder with unet/) trained with DDPM's "
                             "linear schedule; nothing is downloaded")
    parser.add_argument("--prediction", default="eps", choices=("eps", "v"),
                        help="what the --diffusers model predicts")
    parser.add_argument("--class-index", type=int, default=None,
                        help="class label of a class-conditional --diffusers model")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--label", default=None, help="texture label (class-conditional models)")
    parser.add_argument("--mode", default="sync", choices=("sync", "texgen", "independent"))
    parser.add_argument("--resample-noise", action="store_true", help="TexGen's noise resampling (with --mode texgen)")
    parser.add_argument("--view-size", type=int, default=None, help="view side in pixels (default: the model's)")
    parser.add_argument("--texture-size", type=int, default=256)
    parser.add_argument("--elevation", type=float, default=20.0, help="camera elevation in degrees")
    parser.add_argument("--unwrap", action="store_true", help="make UVs with xatlas when the mesh has none")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output .glb or .obj")
    _sampling_args(parser)
    args = parser.parse_args(list(argv))
    if args.out.suffix.lower() not in (".glb", ".obj"):
        parser.error("-o must name a .glb or .obj file")
    if args.views < 1:
        parser.error("--views must be at least 1")
    import torch

    from polydiff.checkpoint import CheckpointError

    from .formats import ShapeError, load_mesh
    from .render import orbit_cameras
    from .texturing import TextureError, UVMesh, texture_mesh, unwrap, write_textured

    extras = [args.out.with_name(args.out.stem + "_texture.png"), args.out.with_name(args.out.stem + "_views.png")]
    problem = _refuse_existing([args.out, *extras], args.overwrite)
    if problem:
        _fail(problem)
        return 1
    try:
        if args.diffusers is not None:
            model = _diffusers_model(args.diffusers, args.prediction, args.class_index)
            label = args.class_index
        else:
            model = load_texture_model(args.ckpt)
            label = model.label_index(args.label)
    except (CheckpointError, ValueError, OSError) as error:
        _fail(str(error))
        return 1
    try:
        mesh = load_mesh(args.mesh)  # trimesh keeps the UVs of the file on the mesh it returns
        if args.unwrap and not _has_uv(mesh):
            mesh = unwrap(mesh, name=str(args.mesh))
        uv_mesh = UVMesh.from_trimesh(mesh, name=str(args.mesh))
    except (ShapeError, TextureError) as error:
        _fail(str(error))
        return 1
    # Centre and scale the mesh into the unit sphere for the cameras (the file keeps its own units).
    vertices = uv_mesh.vertices
    lo, hi = vertices.min(0).values, vertices.max(0).values
    centre = (lo + hi) / 2
    radius = float((vertices - centre).norm(dim=1).max())
    view_mesh = UVMesh((vertices - centre) / radius, uv_mesh.faces, uv_mesh.uv, name=uv_mesh.name)
    size = args.view_size or int(model.require_info()["size"])
    cameras = orbit_cameras(args.views, radius=2.6, elevation_deg=args.elevation, size=size)
    generator = torch.Generator().manual_seed(args.seed)
    cond_value = label

    def sample_fn(start, known, callback, generator):
        count = start.shape[0] if isinstance(start, torch.Tensor) else start[0]
        cond = None
        guidance = 1.0
        if getattr(model, "diffusers_classes", False) and cond_value is not None:
            cond = torch.full((count,), cond_value, dtype=torch.long)
        elif model.conditional:
            value = model.null_label if cond_value is None else cond_value
            cond = torch.full((count,), value, dtype=torch.long)
            guidance = model.guidance if args.guidance is None else args.guidance
            if cond_value is None:
                guidance = 1.0
        return model.sample(start, cond=cond, known=known, callback=callback, generator=generator, steps=args.steps,
                            sampler=args.sampler, guidance=guidance)

    started = time.perf_counter()
    torch.set_num_threads(1)  # the rasteriser's small kernels are fastest single-threaded
    result = texture_mesh(sample_fn, view_mesh, cameras, mode=args.mode, tex_size=args.texture_size,
                          channels=int(model.require_info()["channels"]),
                          generator=generator, resample_noise=args.resample_noise, schedule=model.schedule)
    write_textured(args.out, mesh, result.texture, overwrite=args.overwrite)
    _save_image(extras[0], result.texture)
    _save_image(extras[1], torch.cat(list(result.views), dim=2))
    print(json.dumps({"out": str(args.out), "mode": args.mode, "views": args.views, "seam": result.seam,
                      "coverage": result.coverage, "contrast": result.contrast, "seconds": round(time.perf_counter() - started, 1)}))
    return 0


def _diffusers_model(folder: Path, prediction: str, class_index: int | None) -> Any:
    """A texture module around a local diffusers UNet (DDPM's schedule, DDIM sampling)."""
    from polydiff.schedules import VPLinear

    from .images import DiffusersUNet
    from .module import TextureDiffusion

    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder (a diffusers UNet2DModel saved with save_pretrained)")
    net = DiffusersUNet(pretrained=str(folder), prediction=prediction)
    config = net.model.config
    has_classes = bool(getattr(config, "num_class_embeds", None))
    if class_index is not None and not has_classes:
        raise ValueError(f"{folder}: the model has no class embedding; drop --class-index")
    module = TextureDiffusion(net, schedule=VPLinear(), sampler="ddim", sample_steps=50, guidance=1.0,
                              cond_dropout=0.0, ema_decay=0.0,
                              data_info={"labels": [], "size": int(config.sample_size),
                                         "channels": int(config.in_channels)})
    module.diffusers_classes = has_classes
    return module.eval()


def _has_uv(mesh: Any) -> bool:
    return getattr(getattr(mesh, "visual", None), "uv", None) is not None


def _save_image(path: Path, image: Any) -> None:
    """A (C, H, W) image in [-1, 1] as PNG."""
    import numpy as np
    from PIL import Image

    array = ((image.detach().cpu().clamp(-1, 1).numpy().transpose(1, 2, 0) + 1) * 127.5).round().astype(np.uint8)
    Image.fromarray(array).save(path)
