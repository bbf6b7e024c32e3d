"""Several processes, one run: who does what (README, "Rank policy").

A multi-process run is N copies of the whole pipeline, started by ``torchrun``, SLURM's ``srun`` or
by ``launch`` below (``python train.py trainer=ddp_sim trainer.devices=2``). ``connect`` opens the
process group through the configured Lightning strategy (so the backend and cluster environment are
Lightning's: gloo on CPU, nccl on GPU; SLURM and torchrun variables are read by Lightning), and the
stages then use three patterns:

* ``main_first(fn)``: rank 0 computes and writes the cache entry, the others wait and read it;
* one distributed Lightning fit over all ranks (SFT, distillation), rank 0 saving the result;
* ``is_main()`` guards for everything written once (metrics, plots, samples, summary, W&B).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from plad.checks import InputError, integer

T = TypeVar("T")

# Strategies that need one process per device. "auto" on one device, "single_device" run in-process.
MULTI_PROCESS = ("ddp", "fsdp", "deepspeed")


def env_world() -> int:
    """World size the launcher announced (torchrun / launch: WORLD_SIZE; srun: SLURM_NTASKS)."""
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", 1)))


def env_rank() -> int:
    """This process's rank as the launcher announced it (torchrun: RANK; srun: SLURM_PROCID)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


def initialized() -> bool:
    """A process group is open. Without torch imported none can be (a warm cache lookup stays light)."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return sys.modules["torch"].distributed.get_rank() if initialized() else env_rank()


def world() -> int:
    return sys.modules["torch"].distributed.get_world_size() if initialized() else env_world()


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if initialized():
        sys.modules["torch"].distributed.barrier()


def broadcast(obj: T) -> T:
    """Rank 0's value of ``obj`` on every rank (a decision taken once)."""
    if not initialized():
        return obj
    box = [obj]
    sys.modules["torch"].distributed.broadcast_object_list(box, src=0)
    return box[0]


def main_first(fn: Callable[[], T]) -> T:
    """Rank 0 runs ``fn`` (writing its cache entry), then the others run it and find the entry."""
    if not initialized():
        return fn()
    out = fn() if is_main() else None
    barrier()
    return out if is_main() else fn()  # type: ignore[return-value]


def strategy_name(trainer_cfg: DictConfig) -> str:
    s = trainer_cfg.get("strategy", "auto")
    if isinstance(s, str):
        return s
    return str(OmegaConf.select(trainer_cfg, "strategy._target_", default="")).rsplit(".", 1)[-1].lower()


def processes(trainer_cfg: DictConfig) -> int:
    """How many processes the trainer config asks for (devices x nodes under a multi-process strategy)."""
    name = strategy_name(trainer_cfg)
    if not any(name.startswith(s) for s in MULTI_PROCESS):
        return 1
    devices = trainer_cfg.get("devices", 1)
    integer(devices, f"trainer.devices (strategy {name!r})")
    return devices * int(trainer_cfg.get("num_nodes", 1))


def connect(cfg: DictConfig) -> None:
    """Open the process group with the configured strategy's own set-up (no-op in one process).
    Later fits find it open and reuse it."""
    if env_world() <= 1 or initialized():
        return
    from hydra.utils import instantiate

    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    trainer.strategy.setup_environment()


def launched_externally() -> bool:
    """True inside torchrun / srun / our own launch: the processes exist, do not start more."""
    return (
        "LOCAL_RANK" in os.environ
        or "TORCHELASTIC_RUN_ID" in os.environ
        or ("SLURM_NTASKS" in os.environ and int(os.environ["SLURM_NTASKS"]) > 1)
    )


def launch(cfg: DictConfig, overrides: list[str], run_dir: str, job_name: str = "train") -> int:
    """Start ``processes(cfg.trainer)`` copies of this run on this machine with torchrun, all in
    ``run_dir`` (this job's directory: no second Hydra output dir), and wait for them."""
    n = processes(cfg.trainer)
    if int(cfg.trainer.get("num_nodes", 1)) > 1:
        raise InputError(
            "trainer.num_nodes: a multi-node run is started by torchrun or srun on every node "
            "(README, 'Several processes, GPUs and nodes'), not from one process"
        )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={n}",
        "-m",
        "plad.cli",
        *overrides,
        f"hydra.run.dir={run_dir}",
        "hydra.mode=RUN",
        "hydra.output_subdir=null",
        f"hydra.job.name={job_name}",
    ]
    env = dict(os.environ)
    if cfg.trainer.get("accelerator") == "cpu":  # N processes share the cores: one thread each
        env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.call(cmd, env=env)


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _devices_ok(devices: Any) -> bool:
    """What Lightning accepts: a count >= 1, -1 or "auto" (all), GPU indices as a list or "0,1"."""
    if isinstance(devices, bool):
        return False
    if isinstance(devices, int):
        return devices >= 1 or devices == -1
    if isinstance(devices, str):
        return (
            devices == "auto"
            or all(p.strip().isdigit() for p in devices.split(",") if p.strip())
            and any(p.strip() for p in devices.split(","))
        )
    return (
        isinstance(devices, (list, tuple, ListConfig))
        and len(devices) > 0
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
    )


def check_trainer(trainer_cfg: DictConfig) -> None:
    """The Trainer settings a run uses, checked before any stage (Lightning would find a bad one only
    when the first stage builds its Trainer, after the data and maybe SFT). trainer.precision is
    checked by ``plad.models.precision.canonical_precision``."""
    if not _devices_ok(trainer_cfg.get("devices", "auto")):
        raise InputError(
            f"trainer.devices: expected a count >= 1, -1, 'auto' or GPU indices, got {trainer_cfg.get('devices')!r}"
        )
    nodes = trainer_cfg.get("num_nodes", 1)
    integer(nodes, "trainer.num_nodes")
    if trainer_cfg.get("accelerator", "auto") not in ACCELERATORS:
        raise InputError(
            f"trainer.accelerator: expected one of {list(ACCELERATORS)}, got {trainer_cfg.get('accelerator')!r}"
        )
    every = trainer_cfg.get("log_every_n_steps", 1)
    integer(every, "trainer.log_every_n_steps")
    check_strategy(trainer_cfg)


def check_strategy(trainer_cfg: DictConfig) -> None:
    """Fail before any work, in one line, when the strategy cannot run here."""
    name = strategy_name(trainer_cfg)
    processes(trainer_cfg)  # validates trainer.devices
    sharded = name.startswith(("fsdp", "deepspeed"))
    if sharded and trainer_cfg.get("accelerator") == "cpu":
        raise InputError(
            f"trainer.accelerator: strategy {name!r} runs on GPUs only (Lightning); expected 'gpu', "
            "got 'cpu' (CPU processes: trainer=ddp_sim)"
        )
    if name.startswith("deepspeed"):
        try:
            import deepspeed  # noqa: F401
        except ModuleNotFoundError:
            raise InputError(
                f"trainer.strategy: {name!r} needs DeepSpeed, an optional extra: pip install 'plad[deepspeed]'"
            ) from None


def fsdp_strategy(wrap: list[str], **kwargs: Any) -> Any:
    """Lightning's FSDPStrategy with every module whose class name is in ``wrap`` (the decoder
    layers of the model families) as one FSDP unit; ``kwargs`` go to FSDPStrategy."""
    from functools import partial

    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

    names = frozenset(wrap)
    policy = partial(lambda_auto_wrap_policy, lambda_fn=lambda module: type(module).__name__ in names)
    return FSDPStrategy(auto_wrap_policy=policy, **kwargs)
