"""Ray Train: the TorchTrainer that runs the training loop, and the collate its workers' data iterators call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import ray
import ray.data
import torch
from ray.data.collate_fn import ArrowBatchCollateFn
from ray.train import CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from ray_jobs.train.data import collate_packed, collate_padded


def fit(loop: Callable[[dict], None], loop_config: dict, datasets: dict[str, ray.data.Dataset], *,
        num_workers: int, use_gpu: bool, cpus_per_worker: float, storage: Path, name: str,
        keep_checkpoints: int) -> None:
    """Ray Train: `num_workers` TorchTrainer workers run `loop`, each streaming its shard of `datasets`
    (`get_dataset_shard`); checkpoints and Ray Train's own state go to storage/name. The datasets are split
    between the workers by Ray Data's streaming split (equal=True: the same number of rows each, so every worker
    makes the same number of steps): nothing is materialised. A dataset can be a pipeline pass still running.
    """
    resources = {"CPU": cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    trainer = TorchTrainer(
        loop, train_loop_config=loop_config, datasets=datasets,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=str(storage.resolve()),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints)))
    trainer.fit()


def cluster_cpus() -> float:
    """CPUs of the Ray cluster this process is connected to (all nodes)."""
    return float(ray.cluster_resources().get("CPU", 0.0))


class Collate(ArrowBatchCollateFn):
    """What `iter_torch_batches` calls on each Arrow batch."""

    def __init__(self, packed: bool, document_attention: bool = True, pad_id: int = 0, max_len: int = 0) -> None:
        self.packed, self.document_attention, self.pad_id, self.max_len = packed, document_attention, pad_id, max_len

    def __call__(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        if self.packed:
            return collate_packed(batch, self.document_attention)
        return collate_padded(batch, self.pad_id, self.max_len)
