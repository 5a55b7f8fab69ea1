"""imgdedup: a gRPC inference-and-search server for image de-duplication."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("imgdedup")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
