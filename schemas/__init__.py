"""StreamForge schemas: records, config models of the steps, SQL (the bottom layer)."""
