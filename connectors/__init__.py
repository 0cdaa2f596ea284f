"""StreamForge connectors."""
