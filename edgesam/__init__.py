"""edgesam: Segment Anything packaged for edge devices.

The package root stays light: it imports neither ``edgesam.convert`` (torch) nor
``edgesam.runtime`` (MNN) so that ``edgesam --version`` answers instantly.
"""
from __future__ import annotations

__version__ = "0.1.0"
