"""Running a dataset: each worker opens the bundle once and takes images one at a time; every image's
output is written by the worker that made it, atomically, so an interrupted run loses at most the
images in flight.

``local``: this process (``workers=1``), or N spawned processes (``multiprocessing``), each with
``threads`` CPU threads (default: the cores shared out between the workers).
``ray`` (the ``ray`` extra): Ray Data streams the image list through ``map_batches`` into a pool of N
actors, each of which opens the bundle once; ``address`` joins a running cluster (whose nodes have
edgesam and the bundle at the same path), else a local Ray is started with N x threads CPUs.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from edgesam.dataset.inputs import Item
from edgesam.dataset.store import Store
from edgesam.errors import EdgesamError, InputError
from edgesam.runtime.backends import resolve_threads
from edgesam.runtime.options import RunOptions

ENGINES = ("local", "ray")


@dataclass(frozen=True, kw_only=True)
class Job:
    """What every worker needs (picklable): the bundle, how to run it, and what to do per image."""
    bundle: str
    run: RunOptions
    task: str  # "everything" or "boxes"
    options: Any = None  # AmgOptions for "everything" ("boxes" take their prompts from each Item)
    out: str = ""  # the Store's folder


_WORKER: dict[str, Any] = {}


def _open(job: Job) -> None:
    """Load the bundle once in this worker (a process, or the main process for workers=1)."""
    from edgesam.bundle import load_bundle
    from edgesam.runtime.amg import open_generator

    bundle = load_bundle(job.bundle, verify=False)
    if job.task == "everything":
        pred, gen = open_generator(bundle, job.options, job.run)
    else:
        pred, gen = job.run.predictor(bundle), None
    _WORKER.update(job=job, pred=pred, gen=gen, store=Store.opened(Path(job.out)))


def _boxes_records(pred, image: np.ndarray, boxes: list) -> list[dict]:
    """One mask per box (single-mask output, as the official predictor gives for a box), in batches of 16
    boxes so that at most 16 full-size masks exist at once; each annotation with its RLE added."""
    from edgesam.runtime.rle import area_from_rle, coco_encode_rle, mask_to_rle

    pred.set_image(image)
    out = []
    for i in range(0, len(boxes), 16):
        chunk = boxes[i:i + 16]
        masks, scores, _ = pred.predict_batch(boxes=np.array([b for _, b in chunk], np.float64), multimask_output=False)
        for (ann, _), rle, s in zip(chunk, mask_to_rle(masks[:, 0]), scores[:, 0]):
            out.append({**ann, "segmentation": coco_encode_rle(rle), "area": int(area_from_rle(rle)),
                        "predicted_iou": float(s)})
    return out


def _process(item: Item) -> dict:
    """One image: read, segment, write its output. Never raises: a failure is the returned row."""
    from edgesam.runtime.imageio import read_image

    if "open_error" in _WORKER:
        return {"name": item.name, "ok": False, "error": _WORKER["open_error"]}
    job, t0 = _WORKER["job"], time.perf_counter()
    try:
        image = read_image(item.path)
        if job.task == "everything":
            records = _WORKER["gen"].generate(image)
        else:
            records = _boxes_records(_WORKER["pred"], image, list(item.boxes))
        _WORKER["store"].write(item.name, records)
        return {"name": item.name, "ok": True, "size": list(image.shape[:2]), "masks": len(records),
                "seconds": time.perf_counter() - t0}
    except EdgesamError as e:
        return {"name": item.name, "ok": False, "error": str(e)}
    except MemoryError:
        return {"name": item.name, "ok": False, "error": "out of memory"}
    except Exception as e:  # a bug on one image must not lose the rest of the run
        return {"name": item.name, "ok": False, "error": f"internal error ({type(e).__name__}: {str(e)[:200]})"}


def _init_process(job: Job) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        _open(job)
    except EdgesamError as e:  # e.g. a model file that fails its hash: every image says why
        _WORKER["open_error"] = str(e)


WORKER_DIED = "its worker process died (killed, or out of memory); a rerun retries it"


def run_local(job: Job, items: list[Item], workers: int) -> Iterator[dict]:
    """Rows of ``_process`` as images finish (any order with several workers).

    Several workers: spawned processes, at most two images queued per worker. A worker that dies (a
    kill, the out-of-memory killer) costs only the images it held: they are reported as failed, a
    new pool of workers takes the rest, and a rerun retries them."""
    if workers == 1:
        _open(job)
        for it in items:
            yield _process(it)
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no MNN state forked
    todo = list(reversed(items))
    while todo:
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_process, initargs=(job,))
        pending: dict = {}
        try:
            while todo or pending:
                while todo and len(pending) < 2 * workers:
                    item = todo.pop()
                    try:
                        pending[pool.submit(_process, item)] = item
                    except BrokenProcessPool:
                        todo.append(item)
                        raise
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    item = pending.pop(f)
                    try:
                        yield f.result()
                    except BrokenProcessPool:
                        yield {"name": item.name, "ok": False, "error": WORKER_DIED}
        except BrokenProcessPool:
            for f, item in pending.items():  # held by the pool that broke (some may have finished first)
                ok = f.done() and not f.cancelled() and f.exception() is None
                yield f.result() if ok else {"name": item.name, "ok": False, "error": WORKER_DIED}
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def check_engine(engine: str, workers: int, address: Optional[str] = None) -> None:
    """One line for an engine or worker count that cannot run here (before anything is written)."""
    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if address and engine != "ray":
        raise InputError("--ray-address is for --engine ray")
    if engine == "ray":
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError:
            raise InputError("--engine ray needs Ray Data: pip install 'edgesam[ray]' (or use --engine local "
                             "--workers N)") from None
    if int(workers) != workers or workers < 1:
        raise InputError(f"--workers must be an integer >= 1, not {workers!r}")


class _RayWorker:
    """A Ray Data actor: the bundle opened once, then one image per batch row."""

    def __init__(self, job: Job) -> None:
        _open(job)

    def __call__(self, batch: dict) -> dict:
        rows = [_process(Item(Path(p), n, tuple(json.loads(b))))
                for p, n, b in zip(batch["path"], batch["name"], batch["boxes"])]
        return {"row": [json.dumps(r) for r in rows]}  # one JSON column: no schema to infer


def run_ray(job: Job, items: list[Item], workers: int, address: Optional[str] = None) -> Iterator[dict]:
    import logging

    import ray
    import ray.data

    threads = job.run.threads or 1
    started = not ray.is_initialized()
    if started:
        kw = {"address": address} if address else {"num_cpus": workers * threads, "include_dashboard": False}
        ray.init(log_to_driver=False, logging_level=logging.ERROR, configure_logging=False, **kw)
    try:
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the engine's own bar counts images
        ctx.print_on_execution_start = False
        ds = ray.data.from_items([{"path": str(it.path), "name": it.name, "boxes": json.dumps(it.boxes)}
                                  for it in items],
                                 override_num_blocks=len(items))
        out = ds.map_batches(_RayWorker, fn_constructor_kwargs={"job": job}, batch_size=1, concurrency=workers,
                             num_cpus=threads)
        for row in out.iter_rows():
            yield json.loads(row["row"])
    finally:
        if started:
            ray.shutdown()


def share_threads(run: RunOptions, workers: int) -> RunOptions:
    """Threads per worker: --threads if given, else this process's cores shared out (at least one each)."""
    if run.threads is not None:
        return run
    return replace(run, threads=max(1, resolve_threads(None) // workers))


def execute(job: Job, items: list[Item], store: Store, engine: str, workers: int,
            progress: bool = True, address: Optional[str] = None) -> dict:
    """Run ``items`` not yet done in ``store`` with ``engine``; returns counts, timings and failures."""
    check_engine(engine, workers, address)
    todo = [it for it in items if store.load(it.name) is None]
    rows: list[dict] = []
    t0 = time.perf_counter()
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="images", unit="img", file=sys.stderr)
    rows_in = run_ray(job, todo, workers, address) if engine == "ray" else run_local(job, todo, workers)
    for row in (rows_in if todo else iter(())):
        rows.append(row)
        if bar is not None:
            bar.update(1)
            if not row["ok"]:
                bar.write(f"{row['name']}: {row['error']}", file=sys.stderr)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    done = [r for r in rows if r["ok"]]
    return {"images": len(items), "skipped": len(items) - len(todo), "processed": len(done),
            "failed": [{"image": r["name"], "error": r["error"]} for r in rows if not r["ok"]],
            "seconds": seconds, "images_per_s": len(done) / seconds if done and seconds > 0 else 0.0,
            "masks": sum(r["masks"] for r in done), "sizes": {r["name"]: r["size"] for r in done}}


def settings_of(job: Job, bundle_source: str, extra: Optional[dict] = None) -> dict:
    """What makes two runs' outputs the same kind: kept beside the outputs (store.SETTINGS)."""
    opts = {} if job.options is None else asdict(job.options)
    if opts.get("point_grids") is not None:  # the grids themselves, not just that some were given
        opts["point_grids"] = hashlib.sha256(b"".join(np.ascontiguousarray(g, np.float64).tobytes()
                                                      for g in opts["point_grids"])).hexdigest()
    run = {k: v for k, v in asdict(job.run).items() if k != "threads"}
    return json.loads(json.dumps({"task": job.task, "bundle": bundle_source, "options": opts, "run": run,
                                  **(extra or {})}, default=str))

