"""Where a sweep's cells run: in process, in local processes, or as Ray tasks."""

from __future__ import annotations

from typing import Callable, Iterable

from ..errors import BadInput


def execute(cells: list, setup, jobs: int, executor: str, ray_address: str | None, run_cell: Callable,
            lost_row: Callable) -> Iterable[dict]:
    """Yield each cell's row `run_cell(cell, setup)` as it finishes: in process, in `jobs` local processes,
    or as Ray tasks (a lost Ray worker yields `lost_row(cell, error)`)."""
    if not cells:
        return
    if executor == "ray":
        yield from _execute_ray(cells, setup, ray_address, run_cell, lost_row)
    elif jobs == 1:
        for cell in cells:
            yield run_cell(cell, setup)
    else:
        import multiprocessing

        # spawn: fresh interpreters, no forked ONNX Runtime thread pools. Workers leave Ctrl-C to this
        # process, which stops them at once (terminate: SIGTERM, on which they remove their temporary files).
        pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=_worker_signals)
        try:
            yield from pool.imap_unordered(_run_one, [(run_cell, cell, setup) for cell in cells])
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()


def _worker_signals() -> None:
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # unwinds: finally blocks clean up


def _run_one(job):
    run_cell, cell, setup = job
    return run_cell(cell, setup)


def _import_ray():
    try:
        import ray  # optional extra: only --executor ray needs it
    except ImportError:
        raise BadInput("--executor ray needs Ray, which is not installed: pip install 'bert2onnxq[ray]'") from None
    return ray


def _execute_ray(cells: list, setup, address: str | None, run_cell: Callable, lost_row: Callable) -> Iterable[dict]:
    """One Ray task per cell. Workers read the FP32 export and data and write the cell's model under
    the results folder, so on a multi-node cluster those paths must be on a shared filesystem; the
    rows come back to the driver, which writes the cell files exactly as the local executor does."""
    ray = _import_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except Exception as exc:
            raise BadInput(f"cannot connect to Ray ({str(exc).splitlines()[0][:200]}): check --ray-address") from None
    task = ray.remote(num_cpus=max(1, setup.threads))(run_cell)
    pending = {task.remote(cell, setup): cell for cell in cells}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            cell = pending.pop(ref)
            try:
                yield ray.get(ref)
            except Exception as exc:  # a lost worker: the cell is reported failed, a re-run retries it
                yield lost_row(cell, f"Ray task failed: {str(exc).splitlines()[0][:300]}")
