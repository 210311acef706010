"""polydiff_3d: point-cloud generation and completion, meshes out, and synchronized multi-view texturing.

Point clouds from ShapeNet/ModelNet-style mesh collections (OBJ, PLY, OFF, STL, GLB through
trimesh) or point files, sampled and normalised by PointFlow's protocol; a pure-PyTorch
point-voxel denoiser (no custom CUDA), unconditional or class-conditional with classifier-free
guidance; completion of partial scans and depth back-projections through the core's known-values
mask (PVD); surface reconstruction (marching cubes on a distance field, scikit-image); Chamfer,
EMD, MMD, COV and 1-NNA; synchronized multi-view texturing of UV-mapped meshes (SyncMVD, with
TexGen's persistent texture as an option) with any image denoiser that meets the core's contract;
a procedural demo corpus of shape families and textures. This module only describes the plugin
(no torch, no numpy), so that ``polydiff list`` stays cheap.
"""

from polydiff.plugin import Plugin

plugin = Plugin(
    name="3d",
    description="Point-cloud generation and completion (PVD-style, pure PyTorch), meshes out, and synchronized "
                "multi-view texturing (SyncMVD, TexGen).",
    extra="3d",
    requires=("numpy", "scipy", "trimesh", "skimage", "ot", "PIL"),
    datamodule_class="pytorch_lightning.LightningDataModule",
    model_class="polydiff.module.DiffusionModule",
    config_package="polydiff_3d.configs",
    commands={
        "make-demo-data": "polydiff_3d.commands:make_demo_data",
        "generate": "polydiff_3d.commands:generate",
        "complete": "polydiff_3d.commands:complete",
        "evaluate": "polydiff_3d.evaluation:evaluate_command",
        "texture": "polydiff_3d.commands:texture",
    },
    demo="polydiff_3d.demo:run_demo",
)
