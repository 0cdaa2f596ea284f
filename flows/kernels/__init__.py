"""The kernels: the per-reading hot modules, the only ones compiled (Cython, setup.py).

Each is plain Python, typed for Cython by the ``.pxd`` beside it, and kept
here because compiling it measurably pays (the README's "The compiled hot
path" gives the measurements). They import only downward: each other,
the pipeline config (``flows.config``) and the payload parser
(``flows.decode``); what a series keeps is decided above them
(``flows.series``). :mod:`connectors.runtime.compiled` explains
how an import picks the build or the source (``flows/__init__.py`` installs
that rule before any kernel loads).

>>> from flows.kernels.rollups import RollupState
>>> RollupState.__module__
'flows.kernels.rollups'
"""
