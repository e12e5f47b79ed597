"""The cabinet-gateway daemon: joins the serial side and the cloud side, with its config and CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cabinet-gateway")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
