"""StreamForge flows: the dataflow wiring and the per-series analytics.

Importing the package installs the rule by which the compiled kernels
(``flows/kernels/``) are imported: see :mod:`connectors.runtime.compiled`.
"""

from pathlib import Path

from connectors.runtime.compiled import install_kernel_finder

install_kernel_finder(
    "flows.kernels",
    str(Path(__file__).with_name("kernels")),
    # where the kernels lived before: recovery snapshots name their classes so
    aliases={
        "flows.rollups": "flows.kernels.rollups",
        "flows.regime_detector": "flows.kernels.regime_detector",
    },
)
