"""Whole datasets: image lists in, one output per image, COCO out.

- ``inputs``: images, folders (recursive) and list files -> (path, relative name) items.
- ``store``: the per-image outputs (atomic, checked on a rerun so finished images are skipped), the
  errors list and the COCO file, always rebuilt from the per-image outputs.
- ``engine``: the work itself, one image at a time per worker: the local engine (this process, or
  N processes, each holding the bundle once).
"""
