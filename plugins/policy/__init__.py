"""polydiff_policy: diffusion policies for robot control, on the Push-T benchmark.

Diffusion Policy (Chi et al. 2023) over action chunks with a 1D temporal U-Net or a transformer,
conditioned on low-dimensional or image observations; real-time-iteration inference (RTI-DP)
that warm-starts each chunk from the last; a scripted Push-T expert that records LeRobot or zarr
demonstrations offline; rollout evaluation with success rate, coverage and latency. This module
only describes the plugin (no torch, no simulator), so that ``polydiff list`` stays cheap.
"""

from polydiff.plugin import Plugin

plugin = Plugin(
    name="policy",
    description="Diffusion Policy on Push-T (U-Net or transformer, state or image observations) with RTI-DP warm-started inference.",
    extra="policy",
    requires=("numpy", "gymnasium", "gym_pusht", "pymunk", "pyarrow", "zarr", "PIL"),
    datamodule_class="polydiff_policy.data.PolicyDataModule",
    model_class="polydiff_policy.module.DiffusionPolicy",
    config_package="polydiff_policy.configs",
    commands={
        "make-demo-data": "polydiff_policy.commands:make_demo_data",
        "rollout": "polydiff_policy.commands:rollout",
    },
    demo="polydiff_policy.demo:run_demo",
)
