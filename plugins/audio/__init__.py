"""polydiff_audio: diffusion speech enhancement and dereverberation (SGMSE+ and StoRM).

This module only describes the plugin (no torch, no audio libraries), so that ``polydiff list``
stays cheap; the commands, data module and models are imported when used.
"""

from polydiff.plugin import Plugin

plugin = Plugin(
    name="audio",
    description="Speech enhancement and dereverberation: SGMSE+ and StoRM on complex spectrograms.",
    extra="audio",
    requires=("soundfile", "scipy", "pyroomacoustics", "pesq", "pystoi", "matplotlib"),
    datamodule_class="polydiff_audio.data.PairedAudioDataModule",
    model_class="polydiff_audio.module.SGMSEModule",
    config_package="polydiff_audio.configs",
    commands={
        "make-demo-data": "polydiff_audio.commands:make_demo_data",
        "enhance": "polydiff_audio.commands:enhance",
        "evaluate": "polydiff_audio.commands:evaluate",
    },
    demo="polydiff_audio.demo:run_demo",
)
