"""StreamForge flows."""
