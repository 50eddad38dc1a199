"""The package version (its own module, so submodules can import it in any order)."""

__version__ = "0.3.0"
