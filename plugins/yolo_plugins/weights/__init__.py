"""How a weights file gets into a model: local files, the hub, official release formats and warm starts by role."""
