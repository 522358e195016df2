"""The training pieces that need no Ray: collation, bucketing, model build, optimizer choice, LR schedule, and
document isolation of packed rows in the attention."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest
import torch

from ray_jobs.steps.pack.ops import pack
from ray_jobs.steps.tokenize.chat import IGNORE
from ray_jobs.train.config import ModelConfig, TrainConfig
from ray_jobs.train.data import (
    REAL_TOKENS,
    ROW_KEY,
    collate_packed,
    collate_padded,
    is_packed,
    row_keys,
    sort_by_length,
    train_rows,
)
from ray_jobs.train.loop import Position, read_position, write_position
from ray_jobs.train.model import build_model, build_optimizer, flops_per_token, lr_lambda
from ray_jobs.train.step import init_model, optimizer_step, rank_seed

VOCAB = 1000


def _rows(lengths):
    ids = pa.array([list(range(1, n + 1)) for n in lengths], pa.list_(pa.int32()))
    return pa.table({"input_ids": ids, "labels": ids})


def test_dynamic_padding_pads_to_the_longest_row_of_the_batch():
    batch = collate_padded(_rows([3, 5, 1]), pad_id=0)
    assert batch["input_ids"].shape == (3, 5)
    assert batch["attention_mask"].sum().item() == 9 == batch[REAL_TOKENS].item()
    assert batch["labels"][0].tolist() == [1, 2, 3, IGNORE, IGNORE]
    assert batch["input_ids"][2].tolist() == [1, 0, 0, 0, 0]
    cut = collate_padded(_rows([3, 5, 1]), pad_id=0, max_len=4)  # long rows cut to the model's length
    assert cut["input_ids"].tolist() == [[1, 2, 3, 0], [1, 2, 3, 4], [1, 0, 0, 0]] and cut[REAL_TOKENS].item() == 8


def test_length_bucketing_groups_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 500, 256)
    table = _rows(lengths)

    def padded_slots(t):
        return sum(collate_padded(t.slice(i, 8))["input_ids"].numel() for i in range(0, len(t), 8))

    assert padded_slots(sort_by_length(table)) < 0.6 * padded_slots(table)
    assert sorted(sort_by_length(table)["input_ids"].to_pylist()) == sorted(table["input_ids"].to_pylist())


def test_packed_rows_collate_to_fixed_tensors_with_document_positions():
    ids = pa.array([list(range(10, 15)), list(range(20, 23))], pa.list_(pa.int32()))
    table, _ = pack(ids, ids, 8, pad_id=0)
    assert is_packed(table.schema)
    batch = collate_packed(table, document_attention=True)
    assert batch["input_ids"].shape == (1, 8) and batch[REAL_TOKENS].item() == 8
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2]]
    assert "position_ids" not in collate_packed(table, document_attention=False)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_packed_documents_do_not_attend_to_each_other(arch):
    """With position ids restarting per document, a packed document's logits equal those of the document alone
    (transformers builds the block-diagonal mask from them); without, the second document sees the first."""
    model = build_model(ModelConfig(arch=arch, hidden_size=32, num_layers=2, num_heads=4), VOCAB, 64, "sdpa").eval()
    torch.manual_seed(0)
    a, b = torch.randint(0, VOCAB, (1, 9)), torch.randint(0, VOCAB, (1, 7))
    row = torch.cat([a, b], 1)
    pos = torch.cat([torch.arange(9), torch.arange(7)])[None]
    with torch.no_grad():
        alone = model(input_ids=b, use_cache=False).logits
        packed = model(input_ids=row, position_ids=pos, use_cache=False).logits[:, 9:]
        causal = model(input_ids=row, use_cache=False).logits[:, 9:]
    assert torch.allclose(packed, alone, atol=1e-4)
    assert not torch.allclose(causal, alone, atol=1e-4)


def test_tiny_model_size_and_flops():
    model = build_model(ModelConfig(), 49152, 256, "sdpa")
    params = sum(p.numel() for p in model.parameters())
    assert 3.0e6 < params < 3.6e6  # tied 49,152 x 64 embedding + two small layers
    # the tied output head is a 64 x 49,152 matmul per token: counted once, though its weight is the embedding's
    assert flops_per_token(model, 256) == pytest.approx(6 * params + 12 * 2 * 64 * 256)
    untied = build_model(ModelConfig(tie_embeddings=False), 49152, 256, "sdpa")  # the same matmuls
    untied_params = sum(p.numel() for p in untied.parameters())
    assert flops_per_token(untied, 256) == pytest.approx(6 * (untied_params - 49152 * 64) + 12 * 2 * 64 * 256)
    assert flops_per_token(untied, 256) == pytest.approx(flops_per_token(model, 256))


def test_optimizer_falls_back_to_adamw_on_cpu_with_the_reason(caplog):
    model = torch.nn.Linear(4, 4)
    with caplog.at_level(logging.INFO, logger="ray_jobs"):
        opt = build_optimizer(TrainConfig(optimizer="auto"), model, cuda=False)
    assert isinstance(opt, torch.optim.AdamW)
    with pytest.raises(ValueError, match="needs CUDA and bitsandbytes"):
        build_optimizer(TrainConfig(optimizer="adamw8bit"), model, cuda=False)
    # decay on matrices only
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    f = lr_lambda(TrainConfig(warmup_steps=10, max_steps=110, schedule="cosine", min_lr_ratio=0.1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    lin = lr_lambda(TrainConfig(warmup_steps=0, max_steps=100, schedule="linear", min_lr_ratio=0.0))
    assert lin(50) == pytest.approx(0.5)


def test_optimizer_step_accumulates_and_stops_at_the_end_of_the_data():
    cfg = TrainConfig(model=ModelConfig(hidden_size=32, num_layers=1, num_heads=4), grad_accum=2, lr=1e-2,
                      warmup_steps=1)
    model = build_model(cfg.model, VOCAB, 32, "sdpa")
    opt = build_optimizer(cfg, model, cuda=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    ids = torch.randint(0, VOCAB, (4, 32), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": ids, "labels": ids, REAL_TOKENS: torch.tensor(128), ROW_KEY: torch.arange(4) + 4 * i}
               for i in range(5)]
    it = iter([dict(b) for b in batches])
    losses = [optimizer_step(model, opt, sched, it, cfg, False, torch.device("cpu")) for _ in range(3)]
    assert losses[0][1] == 256 and losses[1][0] < losses[0][0]  # 2 micro-batches per step; the same batch is learnt
    assert losses[0][3].tolist() == list(range(8)) and losses[1][3].tolist() == list(range(8, 16))  # rows trained
    assert losses[2] is None  # the 5th micro-batch alone cannot make a step


def _step_inputs(cfg: TrainConfig, model, micro_batches: int):
    opt = build_optimizer(cfg, model, cuda=False)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    batches = iter([{"input_ids": ids, "labels": ids, REAL_TOKENS: torch.tensor(32)} for _ in range(micro_batches)])
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg)), batches


def test_gradient_checkpointing_recomputes_each_layer_and_gives_the_same_step():
    """With checkpointing every decoder layer runs forward twice per micro-batch (again in the backward pass,
    instead of keeping its activations); the loss and the updated weights are those of the plain step."""
    cfg = TrainConfig(model=ModelConfig(hidden_size=32, num_layers=2, num_heads=4), grad_accum=2, warmup_steps=1)
    results = {}
    for checkpointing in (False, True):
        model = init_model(cfg.model, 0, VOCAB, 16, "sdpa", rank=0, gradient_checkpointing=checkpointing).train()
        calls = []
        # a pre-hook inside the layer: the recompute re-enters it (and stops early, before the layer returns)
        for layer in model.model.layers:
            layer.mlp.register_forward_pre_hook(lambda *_: calls.append(1))
        opt, sched, batches = _step_inputs(cfg, model, 2)
        loss = optimizer_step(model, opt, sched, batches, cfg, False, torch.device("cpu"))[0]
        results[checkpointing] = (loss, len(calls), [p.detach().clone() for p in model.parameters()])
    (loss0, calls0, w0), (loss1, calls1, w1) = results[False], results[True]
    assert calls0 == 2 * 2 and calls1 == 2 * calls0  # 2 layers x 2 micro-batches, then recomputed
    assert loss1 == pytest.approx(loss0, rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(w0, w1))


def test_ddp_all_reduces_once_per_optimizer_step_not_per_micro_batch(tmp_path):
    """A real DDP (gloo, one process): the communication hook runs per gradient bucket per all-reduce; with
    grad_accum = 4 the step reduces as often as a one-micro-batch step does (no_sync on the first three)."""
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        reduces = {}
        for accum in (1, 4):
            cfg = TrainConfig(model=ModelConfig(hidden_size=32, num_layers=1, num_heads=4), grad_accum=accum)
            model = DistributedDataParallel(init_model(cfg.model, 0, VOCAB, 16, "sdpa", rank=0))
            calls = []

            def hook(state, bucket, calls=calls):
                calls.append(bucket.index())
                return allreduce_hook(state, bucket)

            model.register_comm_hook(None, hook)
            opt, sched, batches = _step_inputs(cfg, model, accum)
            assert optimizer_step(model, opt, sched, batches, cfg, False, torch.device("cpu")) is not None
            reduces[accum] = len(calls)
        assert reduces[1] >= 1 and reduces[4] == reduces[1]
    finally:
        dist.destroy_process_group()


def _no_8bit_reason() -> str:
    import importlib.util

    if not torch.cuda.is_available():
        return "CUDA only: bf16 autocast and bitsandbytes' 8-bit optimizer are CUDA kernels (no CUDA device here)"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed: pip install -e .[gpu] (dev.sh does when nvidia-smi works)"
    return ""


@pytest.mark.skipif(bool(_no_8bit_reason()), reason=_no_8bit_reason())
def test_bf16_and_8bit_optimizer_step_on_cuda():
    cfg = TrainConfig(model=ModelConfig(hidden_size=64, num_layers=1, num_heads=4), optimizer="adamw8bit")
    device = torch.device("cuda")
    model = build_model(cfg.model, VOCAB, 32, "sdpa").to(device)
    opt = build_optimizer(cfg, model, cuda=True)
    assert type(opt).__name__ == "PagedAdamW8bit"
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    ids = torch.randint(0, VOCAB, (4, 32), device=device)
    it = iter([{"input_ids": ids, "labels": ids, REAL_TOKENS: torch.tensor(128)}] * 2)
    assert optimizer_step(model, opt, sched, it, cfg, True, device) is not None


def test_a_local_pretrained_model_is_loaded_as_it_is(tmp_path):
    tiny = build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=4), VOCAB, 64, "sdpa")
    tiny.save_pretrained(tmp_path / "tiny")
    loaded = build_model(ModelConfig(pretrained=str(tmp_path / "tiny")), 49152, 2048, "sdpa")
    assert loaded.config.vocab_size == VOCAB  # its own config, not the run's sizes
    ids = torch.randint(0, VOCAB, (1, 8))
    with torch.no_grad():
        assert torch.equal(tiny(input_ids=ids).logits, loaded(input_ids=ids).logits)


def _packed_split_rows():
    """Two splits of packed rows with their provenance, as the pack step makes them (doc_ids, doc_offsets)."""
    lengths = [40, 7, 30, 12, 25, 9, 33, 5]
    ids = pa.array([list(range(1, n + 1)) for n in lengths], pa.list_(pa.int32()))
    doc_ids = pa.array([f"doc/{i}" for i in range(len(lengths))])
    table, _ = pack(ids, ids, 32, pad_id=0, doc_ids=doc_ids)  # the 40-token document is cut into 2 pieces
    return table.append_column("split", pa.array(["train", "val"] * (table.num_rows // 2) +
                                                 ["train"] * (table.num_rows % 2)))


def test_row_keys_are_one_per_packed_row_and_follow_the_row_not_its_place():
    table = _packed_split_rows()
    keys = row_keys(table)
    assert keys.dtype == np.int64 and len(set(keys.tolist())) == table.num_rows
    order = np.arange(table.num_rows)[::-1].copy()
    assert row_keys(table.take(order)).tolist() == keys[order].tolist()  # a row's key is its pieces, not its index
    # unpacked rows (a tokenize folder) by document id; rows without either by their tokens
    docs = _rows([3, 5, 3]).append_column("id", pa.array(["a", "b", "c"]))
    assert len(set(row_keys(docs).tolist())) == 3 and row_keys(docs.slice(1)).tolist() == row_keys(docs)[1:].tolist()
    assert row_keys(_rows([3, 5, 3])).tolist()[0] == row_keys(_rows([3, 5, 3])).tolist()[2]  # same tokens


def test_train_rows_keep_the_split_less_the_consumed_rows_with_only_what_the_collate_reads():
    table = _packed_split_rows()
    train = table.filter(pa.compute.equal(table["split"], "train"))
    keys = row_keys(train)
    got = train_rows("train", None, packed=True)(table)
    assert got.column_names == ["input_ids", "labels", "position_ids", "seq_lens", ROW_KEY]
    assert got[ROW_KEY].to_pylist() == keys.tolist()
    rest = train_rows("train", keys[:2], packed=True)(table)  # a checkpoint trained on the first two
    assert rest[ROW_KEY].to_pylist() == keys[2:].tolist()
    # a hive partition column read back dictionary-encoded; a split folder read alone has no split column
    as_dict = table.set_column(table.schema.get_field_index("split"), "split", table["split"].dictionary_encode())
    assert train_rows("train", None, packed=True)(as_dict).num_rows == train.num_rows
    assert train_rows(None, keys, packed=True)(train.drop_columns(["split"])).num_rows == 0
    batch = collate_packed(got, document_attention=True)
    assert batch[ROW_KEY].tolist() == keys.tolist()
    assert collate_padded(train_rows(None, None, packed=False)(_rows([2, 4])))[ROW_KEY].shape == (2,)


def test_a_checkpoint_position_reads_back(tmp_path):
    write_position(tmp_path, Position(12, 1, np.array([5, -3, 2**62], np.int64), True))
    pos = read_position(tmp_path)
    assert (pos.step, pos.epoch, pos.consumed.tolist(), pos.epoch_done) == (12, 1, [5, -3, 2**62], True)
    old = tmp_path / "old"  # a checkpoint from before positions were kept: its step, the data from the start
    old.mkdir()
    torch.save({"step": 7}, old / "state.pt")
    assert (read_position(old).step, len(read_position(old).consumed)) == (7, 0)


def test_workers_start_from_the_same_weights_then_draw_from_their_own_seed():
    """issue 17: the per-rank seed was set, then overwritten by the shared one before the model was built, so
    every worker drew the same dropout masks. GPT-2 has dropout 0.1: the same batch gives different losses."""
    cfg = ModelConfig(arch="gpt2", hidden_size=32, num_layers=1, num_heads=4)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    models, losses = [], []
    for rank in (0, 1):
        model = init_model(cfg, 0, VOCAB, 16, "sdpa", rank).train()
        models.append(model)
        losses.append(float(model(input_ids=ids, labels=ids).loss.detach()))
    a, b = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)  # identical initial weights
    assert losses[0] != losses[1]  # different dropout masks
    assert len({rank_seed(0, r, s) for r in range(4) for s in range(100)}) == 400  # per rank and per step


def test_train_refuses_a_cpu_budget_ray_would_hang_on():
    from conftest import REPO

    from ray_jobs.config import load_config
    from ray_jobs.errors import UserError
    from ray_jobs.train.job import check_cpus, cpu_budget

    tiny = load_config(REPO / "cluster" / "configs" / "train-tiny-cpu.toml", [])
    assert sum(cpu_budget(tiny, streamed=True).values()) == 2.0
    check_cpus(tiny, 2.0, streamed=True)
    wide = load_config(REPO / "cluster" / "configs" / "train-tiny-cpu.toml", ["tokenize.actors=2"])
    with pytest.raises(UserError, match=r"needs 2.5 CPUs at once.*tokenize.actors x tokenize.actor_cpus.*"
                                        r"lower train.cpus_per_worker"):
        check_cpus(wide, 2.0, streamed=True)
    check_cpus(wide, 2.0, streamed=False)  # a finished folder: no actor pool runs beside the workers
