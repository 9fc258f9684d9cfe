"""Version of the package (one place, read by setup.py and the CLI)."""
__version__ = "0.1.0.dev0"
