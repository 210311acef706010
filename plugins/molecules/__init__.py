"""polydiff_molecules: molecular graph generation by discrete diffusion (DiGress, Graph DiT).

Molecules are heavy-atom graphs read and written through RDKit; a graph transformer denoises
atom and bond classes under marginal transitions, optionally conditioned on several molecular
properties at once with classifier-free guidance. This module only describes the plugin (no
torch, no RDKit), so that ``polydiff list`` stays cheap.
"""

from polydiff.plugin import Plugin

plugin = Plugin(
    name="molecules",
    description="Molecular graph generation by discrete diffusion (DiGress) with multi-property conditioning (Graph DiT).",
    extra="molecules",
    requires=("numpy", "pandas", "rdkit", "torch_geometric", "scipy", "PIL"),
    datamodule_class="polydiff_molecules.data.MoleculeDataModule",
    model_class="polydiff_molecules.module.GraphDiffusion",
    config_package="polydiff_molecules.configs",
    commands={
        "make-demo-data": "polydiff_molecules.commands:make_demo_data",
        "generate": "polydiff_molecules.commands:generate",
        "evaluate": "polydiff_molecules.commands:evaluate",
    },
    demo="polydiff_molecules.demo:run_demo",
)
