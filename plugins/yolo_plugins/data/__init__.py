"""Data sets the project generates itself (no downloads): ``shapes`` is the embedded detection set."""
