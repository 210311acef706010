"""A fake third-party polydiff plugin used by the tests: 1-D sine waves.

It is installed the way any outside package would be, through a ``polydiff.plugins`` entry
point, and is deliberately light: this module imports nothing but :mod:`polydiff.plugin`, so
``polydiff list`` can describe it without importing torch.
"""

from polydiff.plugin import Plugin

plugin = Plugin(
    name="fakewave",
    description="Fake third-party plugin: diffusion on 1-D sine waves (tests only).",
    install="pip install polydiff-fakewave",
    datamodule_class="polydiff_fakewave.data.WaveDataModule",
    config_package="polydiff_fakewave.configs",
    commands={"hello": "polydiff_fakewave.commands:hello"},
    demo="polydiff_fakewave.demo:run_demo",
)
