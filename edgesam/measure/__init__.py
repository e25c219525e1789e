"""Measuring tools, device side (no torch): ``parity`` (tolerances and comparisons), ``paritymatrix``
(``edgesam parity``) and ``bench`` (``edgesam bench``)."""
