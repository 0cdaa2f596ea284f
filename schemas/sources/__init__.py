"""Configuration models of the sources, one module per kind of source."""
