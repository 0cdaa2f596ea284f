"""StreamForge flows: the dataflow wiring and the per-series analytics."""

from connectors.runtime.compiled import install_if_requested

install_if_requested()  # STREAMFORGE_PURE_PYTHON=1: no compiled modules
