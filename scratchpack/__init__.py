"""scratchpack: turn a Linux binary into the smallest container image that still runs it."""

__version__ = "0.1.0"
