"""Command-line entry points: they parse arguments, run the core, and report errors."""
