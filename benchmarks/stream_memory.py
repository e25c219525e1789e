"""Resident memory of a long SAM2VideoStream: does it stay flat once the memory bank is full?

    .venv/bin/python benchmarks/stream_memory.py BUNDLE [--backend ort] [--frames 300] [--every 25]

Prompts one object on the first frame of a generated clip (edgesam.synthetic.clips.make_clip, 30
frames, looped), tracks ``--frames`` more frames one at a time and prints, every ``--every`` frames,
the process's resident memory (VmRSS) and how many past frames the stream still holds. Milliseconds a
frame are printed too, but read benchmarks/sam2_video.py for speed: this script is about memory.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipelines import memory_mb  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--backend", default="mnn")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    from edgesam.errors import EdgesamError
    from edgesam.runtime import SAM2VideoStream
    from edgesam.synthetic.clips import make_clip

    clip = make_clip(30, (480, 640), seed=0)
    try:
        stream = SAM2VideoStream(a.bundle, backend=a.backend, precision=a.precision, threads=a.threads)
    except EdgesamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stream.start(clip.frames[0], obj_id=1, points=[clip.centres[1][0]], labels=[1])
    rows, t0 = [], time.perf_counter()
    print(f"{'frame':>6} {'RSS MB':>8} {'frames held':>12} {'ms/frame':>9}")
    for i in range(1, a.frames + 1):
        stream.track(clip.frames[i % len(clip.frames)])
        if i % a.every == 0:
            held = len(stream.state["output_dict_per_obj"][0]["non_cond_frame_outputs"])
            rows.append((i, memory_mb("VmRSS")))
            print(f"{i:>6} {rows[-1][1]:>8.0f} {held:>12} {(time.perf_counter() - t0) / i * 1000:>9.0f}", flush=True)
    if len(rows) >= 2:
        print(f"RSS from frame {rows[0][0]} to {rows[-1][0]}: {rows[-1][1] - rows[0][1]:+.0f} MB "
              f"(peak {max(r for _, r in rows):.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
