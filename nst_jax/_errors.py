"""Errors a user can cause; the CLI prints their message as one line and exits non-zero."""


class NstError(Exception):
    """Base class: a problem with the user's input, files or settings (not a bug)."""


class ImageError(NstError):
    """An image file that is missing, unreadable, too large, or cannot be written."""


class WeightsError(NstError):
    """A weights file that is missing, damaged, or not VGG-19."""
