"""The training pieces that need no Ray: collation, bucketing, model build, optimizer choice, LR schedule, and
document isolation of packed rows in the attention."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest
import torch

from ray_jobs.config import ModelConfig, TrainConfig
from ray_jobs.steps.tokenize.chat import IGNORE
from ray_jobs.steps.pack.ops import pack
from ray_jobs.train.data import REAL_TOKENS, collate_packed, collate_padded, is_packed, sort_by_length
from ray_jobs.train.loop import optimizer_step
from ray_jobs.train.model import build_model, build_optimizer, flops_per_token, lr_lambda

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
    assert flops_per_token(model, 256) == pytest.approx(6 * (params - 49152 * 64) + 12 * 2 * 64 * 256)


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
    batches = [{"input_ids": ids, "labels": ids, REAL_TOKENS: torch.tensor(128)} for _ in range(5)]
    it = iter([dict(b) for b in batches])
    losses = [optimizer_step(model, opt, sched, it, cfg, False, torch.device("cpu")) for _ in range(3)]
    assert losses[0][1] == 256 and losses[1][0] < losses[0][0]  # 2 micro-batches per step; the same batch is learnt
    assert losses[2] is None  # the 5th micro-batch alone cannot make a step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: bf16 autocast and bitsandbytes 8-bit")
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
