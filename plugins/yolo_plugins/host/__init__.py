"""Everything that wraps or patches an Ultralytics function: activation, the parser hook, loading, fusing, errors."""
