"""StreamForge schemas."""
