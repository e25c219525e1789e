"""edgesam: Segment Anything packaged for edge devices.

The package root stays light: it imports neither ``edgesam.convert`` (torch) nor
``edgesam.runtime`` (MNN) so that ``edgesam --version`` answers instantly.
"""
from __future__ import annotations

import os
import sys

__version__ = "0.1.0"


class _CheckoutSubpackages:
    """Import ``edgesam.runtime`` and ``edgesam.convert`` from a checkout's sibling folders.

    pyproject maps them to runtime/ and convert/ (setuptools package-dir). Installed, they sit
    inside edgesam/; an editable install maps them with its own finder. But ``python`` started in
    the checkout root after a plain ``pip install .`` imports this edgesam/ (the current folder
    leads sys.path), which has no runtime/ inside. This finder, appended after every other one,
    answers only for those two names and only when nothing else found them.
    """

    def __init__(self, folders: dict[str, str]):
        self.edgesam_checkout = folders

    def find_spec(self, name, path=None, target=None):
        folder = self.edgesam_checkout.get(name)
        if folder is None:
            return None
        from importlib.util import spec_from_file_location

        return spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                       submodule_search_locations=[folder])


def _map_checkout_subpackages() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folders = {f"edgesam.{sub}": os.path.join(root, sub) for sub in ("runtime", "convert")}
    in_checkout = os.path.isfile(os.path.join(root, "pyproject.toml")) and all(
        os.path.isfile(os.path.join(f, "__init__.py")) for f in folders.values())
    if in_checkout and not any(getattr(f, "edgesam_checkout", None) == folders for f in sys.meta_path):
        sys.meta_path.append(_CheckoutSubpackages(folders))


_map_checkout_subpackages()
