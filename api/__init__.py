"""StreamForge api."""
