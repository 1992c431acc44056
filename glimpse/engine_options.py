"""`glimpse index|reindex` options that choose where images are embedded: this machine or Ray.

Kept apart from glimpse/cli.py; nothing here imports Ray (a no-op reindex never does).
"""

from __future__ import annotations

import click

ENGINE_KEYS = ("engine", "ray_address", "gpus_per_worker", "ship_bytes")


def engine_options(f):
    f = click.option(
        "--ship-bytes",
        is_flag=True,
        help="--engine ray: this machine reads each file and sends its bytes (for nodes that do not "
        "mount the images at the same path).",
    )(f)
    f = click.option(
        "--gpus-per-worker",
        type=click.FloatRange(0, min_open=False),
        default=0.0,
        metavar="G",
        help="--engine ray: GPUs per Ray worker (fractions share a GPU; 0: CPU workers). "
        "--workers is then the number of Ray workers, --batch-size their batch.",
    )(f)
    f = click.option(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="--engine ray: join this Ray cluster (default: RAY_ADDRESS, else a private one on 127.0.0.1).",
    )(f)
    f = click.option(
        "--engine",
        type=click.Choice(["local", "ray"]),
        default=None,
        help="Where images are embedded: local (default) or ray (a Ray cluster; README: Beyond one "
        "machine). Same as GLIMPSE_ENGINE.",
    )(f)
    return f


def make_runner(opts, engine: str | None, ray_address: str | None, gpus_per_worker: float, ship_bytes: bool):
    """The runner for ``--engine ray`` (None: the local one). Ray missing: exit 2 with the install line."""
    from search.settings import settings

    if (engine or settings()["GLIMPSE_ENGINE"]) != "ray":
        if ray_address or gpus_per_worker or ship_bytes:
            raise click.UsageError("--ray-address, --gpus-per-worker and --ship-bytes need --engine ray")
        return None
    from indexer.ray_cluster import require_ray

    require_ray()
    from indexer.ray_runner import RayRunner

    return RayRunner(opts, address=ray_address, gpus_per_worker=gpus_per_worker, ship_bytes=ship_bytes)
