"""Joining a Ray cluster for one run, or starting a private one on this machine bound to loopback.

Only :mod:`indexer.ray_runner` calls :func:`ray_session`, and only when a run has something to
embed: ``import ray`` costs seconds and a cluster start ten more on a small machine.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator

from search.errors import EXIT_USAGE, GlimpseError

log = logging.getLogger("glimpse.indexer")

INSTALL_LINE = 'pip install -e ".[ray]"'


class RayNotInstalled(GlimpseError):
    """``--engine ray`` without Ray installed (a usage problem: exit 2)."""

    exit_code = EXIT_USAGE


def require_ray() -> None:
    """Refuse ``--engine ray`` early when Ray is missing, without importing it."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        found = False
    if not found:
        raise RayNotInstalled(f"--engine ray needs Ray on this machine and every node: {INSTALL_LINE}")


def cluster_address(address: str | None) -> str | None:
    """``--ray-address``, else RAY_ADDRESS (as ``ray.init`` reads it), else None: a private cluster."""
    return address or os.environ.get("RAY_ADDRESS") or None


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[str]:
    """Ray, initialised for this run and shut down after it; yields a description for the log.

    With an address: join that cluster (its token, when it uses token authentication, comes
    from RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH or ``~/.ray/auth_token``, read by Ray itself).
    Without: a private single-machine cluster whose servers listen on 127.0.0.1 only, with no
    dashboard and no usage report, in a temporary folder removed afterwards.
    """
    address = cluster_address(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    temp_dir = None
    if address is None or _loopback(address):
        # Ray replaces a loopback address by the machine's outward IP (found by probing a public
        # DNS address), then listens on or dials that, unless told this is a single machine. Read
        # when ray is imported: set before.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if address is None:
        temp_dir = tempfile.mkdtemp(prefix="glimpse-ray-")
        # Ray starts its workers at nice 15 so a shared node's other work comes first; this private
        # cluster exists only for this run, whose local twin decodes and encodes at nice 0, and at 15
        # any other process (even a nice 19 one) halves what the workers get. A user's own value wins.
        os.environ.setdefault("RAY_worker_niceness", "0")
    elif _token_available():
        # `ray start` turns token authentication on by default, but a joining driver only sends
        # the token in token mode; RAY_AUTH_MODE set by the user wins.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if not logging.getLogger("glimpse").isEnabledFor(logging.DEBUG):  # -vv shows Ray's own lines
        logging.getLogger("ray").setLevel(logging.WARNING)
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        if address is None:
            ray.init(
                address="local",
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                num_cpus=os.cpu_count() or 1,
                _temp_dir=temp_dir,
                log_to_driver=False,
                configure_logging=False,
            )
            where = "a private Ray cluster on 127.0.0.1"
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            where = f"the Ray cluster at {address}"
        resources = ray.cluster_resources()
        log.info(
            "embedding on %s: %d node(s), %g CPU, %g GPU",
            where,
            len([n for n in ray.nodes() if n.get("Alive")]),
            resources.get("CPU", 0),
            resources.get("GPU", 0),
        )
        yield where
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _token_available() -> bool:
    """A Ray token where Ray looks for one: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return os.path.isfile(path)
