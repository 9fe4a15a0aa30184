"""KITTY's service library: the four services and the pieces they share."""

from importlib.metadata import version

__version__ = version("kittyai")
