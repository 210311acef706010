"""polydiff_motion: human motion and pose with diffusion.

Text-to-motion (MDM) on HumanML3D's 263-d features with classifier-free guidance; editing
(in-betweening, body-part editing) through known values; STMC's multi-track timelines composed at
every denoising step; a PhysDiff-style projection against ground penetration, floating and foot
skating inside the sampling loop; 2D-to-3D pose lifting (DiffPose, with DDHPose's bone
length/direction split as an option) with several hypotheses; a TMR-style motion-text evaluator
for FID, R-precision and the rest; readers for HumanML3D, AMASS (through smplx), Human3.6M and
BVH; a procedural demo corpus on the SMPL skeleton. This module only describes the plugin (no
torch, no numpy), so that ``polydiff list`` stays cheap.
"""

from polydiff.plugin import Plugin

plugin = Plugin(
    name="motion",
    description="Text-to-motion (MDM) with STMC timelines, PhysDiff-style projection and editing; 2D-to-3D pose lifting.",
    extra="motion",
    requires=("numpy", "scipy", "smplx"),
    datamodule_class="pytorch_lightning.LightningDataModule",
    model_class="polydiff.module.DiffusionModule",
    config_package="polydiff_motion.configs",
    commands={
        "make-demo-data": "polydiff_motion.commands:make_demo_data",
        "generate": "polydiff_motion.commands:generate",
        "lift": "polydiff_motion.lifting:lift_command",
        "evaluate": "polydiff_motion.evaluation:evaluate_command",
        "train-evaluator": "polydiff_motion.evaluation:train_evaluator_command",
    },
    demo="polydiff_motion.demo:run_demo",
)
