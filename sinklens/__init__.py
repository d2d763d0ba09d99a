"""sinklens: attention sinks as a gateway for backdooring LLM unlearning, made inspectable."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sinklens")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
