"""StreamForge schemas."""

from flows.pure_python import install_if_requested

install_if_requested()  # STREAMFORGE_PURE_PYTHON=1: no compiled modules (see flows.pure_python)
