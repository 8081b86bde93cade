"""Reference task API bundled with slipway."""

__version__ = "1.0.0"
