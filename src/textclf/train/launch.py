"""`train.processes`: the train stage runs itself under `accelerate launch` for data-parallel
training, so several GPUs (or CPU processes over gloo) train inside `dvc repro` and
`dvc exp run`, with dvc.lock, the run-cache and experiments as for one process.

    dvc exp run -S train.processes=4          # 4 GPUs of this machine (or 4 CPU processes)

Each process takes its share of every epoch's batches (textclf.modeling.batching), so
train.batch_size is per process: the global batch is processes x batch_size. Several machines
are launched by hand, one launch per node with an Accelerate config file that names the node's
rank, the main node's address and the machine count (`accelerate config`, then
`accelerate launch --config_file node.yaml stages/train.py` on each node); that run is outside
DVC's bookkeeping until its outputs are committed with `dvc commit train`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def launched() -> bool:
    """True in a process started by a launcher (accelerate launch, torchrun): it sets
    WORLD_SIZE, and the stage must not launch again."""
    return "WORLD_SIZE" in os.environ


def free_port() -> int:
    """A free TCP port for the processes' rendezvous: queued experiments running side by side
    (`dvc queue start -j N`) must not share Accelerate's default port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(processes: int, argv: list[str]) -> list[str]:
    """`accelerate launch` of this script (argv: sys.argv) on `processes` processes of this
    machine. Precision is left to the stage (train.mixed_precision), compilation to
    train.compile."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", str(processes), "--num_machines", "1",
            "--main_process_port", str(free_port()), "--mixed_precision", "no",
            "--dynamo_backend", "no", *argv]


def relaunch(processes: int, argv: list[str]) -> int:
    """Run this script again under `accelerate launch`; its exit status."""
    return subprocess.run(launch_command(processes, argv)).returncode
