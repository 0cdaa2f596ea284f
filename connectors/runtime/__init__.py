"""The shared runtime below every connector and flow: logs, metrics, outputs, registry.

It imports nothing of StreamForge but :mod:`schemas`.
"""
