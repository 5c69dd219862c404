"""Launching the training worker on several ranks through ``mlx.launch``.

Spec field ``distributed``: ``{"hosts": ["127.0.0.1", ...] | "hostfile": PATH,
"backend": "ring" | "mpi", "ranksPerHost": N}``. mlx.launch relays each rank's stdout to its
own, so rank 0 writes events on its real stdout (no ``CORTEX_EVENT_FD``) and the job manager
reads mlx.launch's stdout; other ranks write no events. Gradients are averaged by the step
(``average_gradients``); the batch is split across ranks, so the worker rounds the batch size
down to a multiple of the rank count (with a warning event).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import InvalidParams

BACKENDS = ("ring", "mpi")


def validate(distributed: dict) -> dict:
    """Return the distributed settings with defaults, or raise InvalidParams."""
    if not isinstance(distributed, dict):
        raise InvalidParams("distributed must be an object", field="distributed")
    backend = distributed.get("backend", "ring")
    if backend not in BACKENDS:
        raise InvalidParams("distributed.backend must be ring or mpi", field="distributed.backend")
    hosts = distributed.get("hosts")
    hostfile = distributed.get("hostfile")
    if not hosts and not hostfile:
        raise InvalidParams("distributed needs hosts or hostfile", field="distributed.hosts")
    if hosts is not None and (
        not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts)
    ):
        raise InvalidParams(
            "distributed.hosts must be a list of host names", field="distributed.hosts"
        )
    ranks = distributed.get("ranksPerHost", 1)
    if not isinstance(ranks, int) or isinstance(ranks, bool) or not 1 <= ranks <= 64:
        raise InvalidParams(
            "distributed.ranksPerHost must be an integer in [1, 64]",
            field="distributed.ranksPerHost",
        )
    return {"backend": backend, "hosts": hosts, "hostfile": hostfile, "ranksPerHost": ranks}


def world_size(distributed: dict) -> int | None:
    """Return the number of ranks, when it is known without reading a hostfile."""
    settings = validate(distributed)
    if settings["hosts"]:
        return len(settings["hosts"]) * settings["ranksPerHost"]
    return None


def launch_command(python: str, job_dir: Path, distributed: dict) -> list[str]:
    """Return the argv that runs the worker on every rank through mlx.launch."""
    settings = validate(distributed)
    launcher = Path(python).parent / "mlx.launch"
    if launcher.exists():
        command = [str(launcher)]
    elif shutil.which("mlx.launch"):
        command = [shutil.which("mlx.launch")]
    else:
        command = [python, "-c", "from mlx._distributed_utils.launch import main; main()"]
    command += ["--backend", settings["backend"], "--python", python]
    if settings["hostfile"]:
        command += ["--hostfile", str(settings["hostfile"])]
    else:
        command += ["--hosts", ",".join(settings["hosts"])]
    command += ["-n", str(settings["ranksPerHost"])]
    if settings["ranksPerHost"] > 1:
        # Ranks sharing a machine split its cores instead of each starting all of them.
        threads = max(1, (os.cpu_count() or 1) // settings["ranksPerHost"])
        command += ["--env", f"OPENBLAS_NUM_THREADS={threads}"]
    return [*command, "--", "-m", "cortex_rpc.training.worker", str(job_dir)]
