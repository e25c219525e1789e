"""Typed errors. The CLI turns every ``EdgesamError`` into one line on stderr.

``CheckFailed`` (a parity or threshold failure) maps to exit code 1; every
other ``EdgesamError`` is bad input or usage and maps to exit code 2.
"""
from __future__ import annotations


class EdgesamError(Exception):
    """Base class of every user-facing edgesam failure."""

    exit_code = 2


class InputError(EdgesamError, ValueError):
    """A bad argument, prompt or image (also a ValueError, as in segment-anything)."""


class OutputError(InputError):
    """A destination (--out, --json, ...) that cannot be written: a missing or read-only folder,
    a file system that takes no new files, a full disk. Nothing is left there."""


class ImageError(InputError):
    """An image that is missing, unreadable or of an unsupported kind."""


class CheckpointError(EdgesamError):
    """A checkpoint that is missing, corrupt, unsafe or of the wrong model family."""


class BundleError(EdgesamError):
    """A bundle whose manifest or files are missing, tampered with or inconsistent."""


class ConversionError(EdgesamError):
    """Export or MNN conversion failed, or a converted file does not load."""


class BackendError(EdgesamError):
    """A backend that is not installed or cannot run the requested model."""


class CheckFailed(EdgesamError):
    """A numerical check (parity, threshold) failed: exit code 1."""

    exit_code = 1


class ParityError(CheckFailed):
    """Outputs differ from the reference by more than their tolerance."""
