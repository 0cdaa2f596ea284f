"""StreamForge connectors: one folder per connected system, each with its sources or sinks.

Each folder holds the connector's code, its config model (``config.py``), a
``README.md`` documenting every option and a runnable ``sample.yaml``.
:mod:`connectors.runtime` is what they all build on (logging, metrics, the
output items, the registry through which the flow finds them).
"""
