"""What each training memory/speed switch does, measured: one model, one process per setting, the loop's own step.

    python benchmarks/train_bench.py --tokenize-dir shards/out/run/tokenize        # CPU: padding + a small model
    python benchmarks/train_bench.py --gpu --hidden 768 --layers 12 --heads 12 --seq-len 2048 --micro 8   # ~125 M
    benchmarks/gpu_check.sh                                  # the GPU check: --gpu-check on the packed sample

--gpu-check (what benchmarks/gpu_check.sh runs; no Ray, no package index): the sample shards tokenized with the
shipped tokenizer and packed as the pack step packs them (steps/pack/ops.py, seq_len 2048, position ids restarting
per document), streamed by a prefetch thread through the trainer's own collate (train/data.collate_packed) into a
~125 M-parameter Llama (train/step.init_model, bf16 autocast, SDPA or flash_attention_2 when flash_attn imports,
torch.compile), stepped by train/step.optimizer_step for a fixed number of steps with AdamW, PagedAdamW8bit
(train/model.build_optimizer), and AdamW with plain causal attention over the row (no document masking). Per
setting: tokens/s, MFU (model.flops_per_token x slots/s / the GPU's bf16 peak), peak CUDA memory, optimizer-state
bytes, data stall (the share of step time spent waiting for the next batch) and compile time; then the targets
(MFU >= 40 %, stall < 5 %, 8-bit state <= 30 % of AdamW's).

Padding (no model): the train split's document lengths (a tokenize stage folder) batched `--micro` at a time, as
the padded share of the token slots: padding every row to --seq-len, dynamic padding to the longest row of each
batch in arrival order, dynamic padding after sorting by length within windows of 16 batches (train.bucket_batches),
and packing (tokenize/pack.py, best-fit decreasing, documents split at --seq-len).

Compute: a transformers Llama from `ray_jobs.train.model.build_model` with random init, trained on random token
rows of --seq-len with `ray_jobs.train.step.optimizer_step` (the loop's own step: autocast, accumulation,
clipping, optimizer, schedule), `--steps` steps after 2 warm-up steps, in a fresh child process per setting so
peak memory is its own: CUDA max_memory_allocated on GPU, the child's peak RSS on CPU. Settings: the baseline
(fp32, SDPA), bf16 autocast, gradient checkpointing, gradient accumulation (--micro / 4 rows x 4 micro-batches:
the same tokens per step), eager attention instead of SDPA, and on CUDA the 8-bit optimizer (PagedAdamW8bit).
tokens/s counts every slot (no padding in these rows); MFU on GPU = FLOPs per token (model.flops_per_token) x
tokens/s / the GPU's bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = {
    "baseline (fp32, sdpa)": {},
    "bf16 autocast": {"precision": "bf16"},
    "gradient checkpointing": {"gradient_checkpointing": True},
    "grad accumulation x4 (micro / 4)": {"grad_accum": 4},
    "eager attention": {"attention": "eager"},
    "bf16 + 8-bit optimizer": {"precision": "bf16", "optimizer": "adamw8bit"},
    "bf16 + checkpointing + 8-bit": {"precision": "bf16", "gradient_checkpointing": True, "optimizer": "adamw8bit"},
}
GPU_ONLY = {"bf16 + 8-bit optimizer", "bf16 + checkpointing + 8-bit"}


def padding_figures(tokenize_dir: Path, micro: int, seq_len: int) -> dict:
    import numpy as np
    import pyarrow.dataset as pads

    from ray_jobs.steps.pack.ops import best_fit_decreasing, pieces

    t = pads.dataset(str(tokenize_dir / "split=train"), format="parquet").to_table(columns=["num_tokens"])
    lengths = np.minimum(t["num_tokens"].to_numpy(), seq_len)
    lengths = lengths[lengths > 0]
    n = len(lengths) // micro * micro
    real = int(lengths[:n].sum())

    def padded(ls):
        return int(sum(b.max() * micro for b in ls[:n].reshape(-1, micro)))

    window = micro * 16
    bucketed = np.concatenate([np.sort(lengths[i:i + window]) for i in range(0, n, window)])[:n]
    full = np.asarray(t["num_tokens"].to_numpy())
    _, _, size, _ = pieces(full[full > 0], seq_len, "split")
    _, _, rows = best_fit_decreasing(size, seq_len)
    return {"documents": int(n), "micro_batch": micro, "seq_len": seq_len, "padding_share": {
        "pad every row to seq_len": 1 - real / (n * seq_len),
        "dynamic padding (longest in batch)": 1 - real / padded(lengths),
        "dynamic padding + length bucketing (16 batches)": 1 - real / padded(bucketed),
        "packing (best-fit decreasing)": 1 - int(size.sum()) / (rows * seq_len)}}


def measure(cfg, args: argparse.Namespace, batches, device, seq_len: int, compile_model: bool = False) -> dict:
    """The model (train/step.init_model: seeded, checkpointing as cfg says) and optimizer of `cfg`, `args.warmup`
    steps of train/step.optimizer_step (compiling, when asked), then `args.steps` measured ones: tokens/s (real
    tokens), slots/s, data stall, peak memory (CUDA allocator, else the process's RSS), MFU where the GPU's peak is
    known, optimizer-state bytes."""
    import torch

    from ray_jobs.train.model import attention_impl, build_optimizer, flops_per_token, lr_lambda, peak_flops
    from ray_jobs.train.step import init_model, optimizer_step

    cuda = device.type == "cuda"
    attn = attention_impl(cfg, cuda)
    model = init_model(cfg.model, 0, args.vocab, seq_len, attn, 0, 0, cfg.gradient_checkpointing).to(device)
    params, fpt = sum(p.numel() for p in model.parameters()), flops_per_token(model, seq_len)
    opt = build_optimizer(cfg, model, cuda)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    if compile_model:
        model = torch.compile(model)
    bf16 = cfg.precision == "bf16"
    t0 = time.perf_counter()
    for _ in range(args.warmup):  # a compile happens in the first steps
        optimizer_step(model, opt, sched, batches, cfg, bf16, device)
    warm_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    wait = tokens = 0.0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss, real, waited, _ = optimizer_step(model, opt, sched, batches, cfg, bf16, device)
        wait, tokens = wait + waited, tokens + real
    dt = time.perf_counter() - t0
    slots = args.steps * cfg.grad_accum * cfg.micro_batch_size * seq_len
    out = {"attention": attn, "optimizer": type(opt).__name__, "params_m": params / 1e6, "loss": loss,
           "tokens_per_s": tokens / dt, "slots_per_s": slots / dt, "data_stall": wait / dt, "warmup_s": warm_s,
           "optimizer_state_bytes": optimizer_state_bytes(opt), "seq_len": seq_len, "steps": args.steps}
    peak = peak_flops(cfg)
    if peak:
        out["mfu"] = fpt * slots / dt / peak
    if cuda:
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
        out["gpu"] = torch.cuda.get_device_name()
    else:
        out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def optimizer_state_bytes(opt) -> int:
    """Bytes of the optimizer's state tensors (AdamW: two fp32 moments per parameter; PagedAdamW8bit: uint8
    moments plus block-wise scales, and fp32 for tensors under its 4,096-element minimum)."""
    import torch

    return sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values() if torch.is_tensor(t))


def child(args: argparse.Namespace, overrides: dict) -> dict:
    """One setting of the sweep: random token rows of --seq-len (no padding: every slot is a token)."""
    import torch

    from ray_jobs.train.config import ModelConfig, TrainConfig

    device = torch.device("cuda" if args.gpu else "cpu")
    micro = args.micro // overrides.get("grad_accum", 1)
    cfg = TrainConfig(model=ModelConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads),
                      micro_batch_size=micro, max_steps=args.steps + args.warmup, warmup_steps=1,
                      peak_tflops=args.peak_tflops,
                      **{"precision": "fp32", "attention": "sdpa", "optimizer": "adamw", **overrides})

    def batches():
        while True:
            ids = torch.randint(0, args.vocab, (micro, args.seq_len), device=device)
            yield {"input_ids": ids, "labels": ids, "real_tokens": torch.tensor(micro * args.seq_len)}

    return measure(cfg, args, batches(), device, args.seq_len)


GPU_CHECK = {  # bf16, torch.compile; in order of importance: a setting cut by the deadline leaves those before it
    "adamw / document attention": {"optimizer": "adamw"},
    "paged adamw 8-bit / document attention": {"optimizer": "adamw8bit"},
    "adamw / causal over the row": {"optimizer": "adamw", "packed_attention": "causal"},  # no document masking
}
TARGETS = {"mfu": 0.40, "data_stall": 0.05, "state_ratio": 0.30}


def packed_sample(seq_len: int, max_docs: int = 0):
    """The sample shards' documents, tokenized by the shipped tokenizer with EOS after each (what the tokenize
    step does for text rows) and packed by the pack step's own function: (packed rows, PackStats)."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    from ray_jobs.steps.pack.ops import pack
    from ray_jobs.steps.tokenize.config import DEFAULT_TOKENIZER
    from ray_jobs.steps.tokenize.tokenizer import load_tokenizer, resolve_eos

    texts = pads.dataset(str(REPO / "shards" / "sample" / "parquet"), format="parquet").to_table(columns=["text"])
    texts = [t for t in texts["text"].to_pylist() if t][:max_docs or None]
    tok = load_tokenizer(DEFAULT_TOKENIZER)
    eos = resolve_eos(tok, "auto")
    ids = pa.array([e.ids + [eos] for e in tok.encode_batch_fast(texts, add_special_tokens=False)],
                   pa.list_(pa.int32()))
    return pack(ids, ids, seq_len, pad_id=0)


def prefetched(table, micro: int, device, document_attention: bool, depth: int = 4):
    """Micro-batches of packed rows, cycled, collated by the trainer's collate in a background thread (pinned on
    CUDA) and copied to the device without blocking: the loader a GPU worker would run."""
    import queue
    import threading

    from ray_jobs.train.data import REAL_TOKENS, collate_packed

    ready: queue.Queue = queue.Queue(maxsize=depth)
    cuda = device.type == "cuda"

    def work():
        start = 0
        while True:
            if start + micro > table.num_rows:
                start = 0
            batch = collate_packed(table.slice(start, micro), document_attention)
            ready.put({k: v.pin_memory() if cuda and k != REAL_TOKENS else v for k, v in batch.items()})
            start += micro

    threading.Thread(target=work, daemon=True).start()  # the child process ends with its measurement
    while True:
        batch = ready.get()
        yield {k: v if k == REAL_TOKENS else v.to(device, non_blocking=True) for k, v in batch.items()}


def gpu_check_child(args: argparse.Namespace, setting: dict) -> dict:
    """One setting of the GPU check on the packed sample, in its own process (peak memory of its own)."""
    import pyarrow.parquet as pq
    import torch

    from ray_jobs.train.config import ModelConfig, TrainConfig

    device = torch.device(args.device)
    table = pq.read_table(args.packed)
    cfg = TrainConfig(model=ModelConfig(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads),
                      micro_batch_size=args.micro, max_steps=args.warmup + args.steps, warmup_steps=args.warmup,
                      precision="bf16" if device.type == "cuda" else "fp32", peak_tflops=args.peak_tflops,
                      **{"optimizer": "adamw", "packed_attention": "document", **setting})
    batches = prefetched(table, args.micro, device, cfg.packed_attention == "document")
    return measure(cfg, args, batches, device, table.schema.field("input_ids").type.list_size, args.compile)


def gpu_check_summary(results: dict[str, dict]) -> list[str]:
    """The table of the settings and each target, met or missed, with its figure."""
    lines = ["| setting | optimizer | attention | tokens/s | MFU | peak GB | optimizer state MB | data stall | "
             "warm-up s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:100]} | | | | | | | |")
            continue
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        mem = f"{r['peak_mem_gb']:.1f}" if "peak_mem_gb" in r else "-"
        lines.append(f"| {name} | {r['optimizer']} | {r['attention']} | {r['tokens_per_s']:,.0f} | {mfu} | {mem} | "
                     f"{r['optimizer_state_bytes'] / 1e6:,.1f} | {r['data_stall']:.1%} | {r['warmup_s']:.0f} |")
    ok = [r for r in results.values() if "error" not in r]
    by_opt = {r["optimizer"]: r for r in ok}
    if "mfu" in (best := max(ok, key=lambda r: r.get("mfu", 0.0), default={})):
        lines.append(f"target MFU >= {TARGETS['mfu']:.0%}: {'met' if best['mfu'] >= TARGETS['mfu'] else 'MISSED'} "
                     f"({best['mfu']:.1%}, best setting)")
    if ok:
        stall = max(r["data_stall"] for r in ok)
        lines.append(f"target data stall < {TARGETS['data_stall']:.0%}: "
                     f"{'met' if stall < TARGETS['data_stall'] else 'MISSED'} ({stall:.1%}, worst setting)")
    if "AdamW" in by_opt and "PagedAdamW8bit" in by_opt:
        ratio = by_opt["PagedAdamW8bit"]["optimizer_state_bytes"] / by_opt["AdamW"]["optimizer_state_bytes"]
        lines.append(f"target 8-bit state <= {TARGETS['state_ratio']:.0%} of AdamW's: "
                     f"{'met' if ratio <= TARGETS['state_ratio'] else 'MISSED'} ({ratio:.1%})")
    return lines


def _run_child(cmd: list[str], left: float, deadline: float) -> dict:
    """A child's JSON line, or {"error": its last stderr line} (or the deadline it ran past)."""
    if left < 20:
        return {"error": f"not run: the {deadline:.0f} s deadline is reached"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        return {"error": f"over the {deadline:.0f} s deadline"}
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}


def gpu_check(args: argparse.Namespace, passthrough: list[str]) -> dict:
    """The parent: the packed sample written once, one child per setting under a shared deadline."""
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    table, stats = packed_sample(args.seq_len, args.max_docs)
    args.out.mkdir(parents=True, exist_ok=True)
    packed = args.out / "packed_sample.parquet"
    pq.write_table(table, packed)
    print(f"packed sample: {stats.as_dict()} in {time.perf_counter() - t0:.1f} s", flush=True)
    results: dict[str, dict] = {}
    for name, setting in GPU_CHECK.items():
        if (setting.get("optimizer") == "adamw8bit" and args.device != "cuda") or (
                args.only and name not in args.only.split("|")):
            continue  # bitsandbytes' 8-bit optimizer is a CUDA kernel
        cmd = [sys.executable, __file__, *passthrough, "--packed", str(packed), "--child", json.dumps(setting)]
        results[name] = _run_child(cmd, args.deadline - (time.perf_counter() - t0), args.deadline)
        if "error" in results[name] and args.compile:  # figures without the compile rather than none
            first = results[name]["error"]
            results[name] = _run_child(cmd + ["--no-compile"], args.deadline - (time.perf_counter() - t0),
                                       args.deadline)
            results[name]["compile_error"] = first
        print(name, results[name], flush=True)
    print("\n".join(gpu_check_summary(results)), flush=True)
    return {"packing": stats.as_dict(), "settings": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenize-dir", type=Path, help="a run's tokenize folder, for the padding figures")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--micro", type=int, default=8, help="rows per optimizer step")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--only", help="setting names separated by | (names hold commas)")
    ap.add_argument("--gpu-check", action="store_true", help="the GPU check on the packed sample (see above)")
    ap.add_argument("--device", default="cuda", help="--gpu-check: cuda, or cpu to try its logic without a GPU")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="--gpu-check: torch.compile")
    ap.add_argument("--warmup", type=int, default=2, help="steps before the measured ones")
    ap.add_argument("--max-docs", type=int, default=0, help="--gpu-check: documents of the sample (0 = all)")
    ap.add_argument("--deadline", type=float, default=270.0, help="--gpu-check: seconds for all settings")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="for MFU; 0 = from the GPU's name")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "gpu_check")
    ap.add_argument("--packed", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.child:
        run = gpu_check_child if args.gpu_check else child
        print(json.dumps(run(args, json.loads(args.child))))
        return
    passthrough = [a for a in sys.argv[1:] if not a.startswith("--json") and a != str(args.json)]
    if args.gpu_check:
        report = gpu_check(args, passthrough)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return
    report: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                             if k not in ("child", "json")}}
    if args.tokenize_dir:
        report["padding"] = padding_figures(args.tokenize_dir, args.micro, args.seq_len)
        print(json.dumps(report["padding"], indent=2))
    names = [n for n in SETTINGS if args.gpu or n not in GPU_ONLY]
    if args.only:
        names = [n for n in names if n in args.only.split("|")]
    report["compute"] = {}
    for name in names:
        proc = subprocess.run([sys.executable, __file__, *passthrough, "--child", json.dumps(SETTINGS[name])],
                              capture_output=True, text=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {
            "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
        report["compute"][name] = res
        print(name, res, flush=True)
    base = report["compute"].get("baseline (fp32, sdpa)", {})
    print("\n| setting | tokens/s | vs baseline | peak memory GB | MFU |\n|---|---:|---:|---:|---:|")
    for name, r in report["compute"].items():
        if "error" in r:
            print(f"| {name} | failed: {r['error'][:80]} | | | |")
            continue
        mem = r.get("peak_mem_gb", r.get("peak_rss_gb"))
        ratio = r["tokens_per_s"] / base["tokens_per_s"] if base.get("tokens_per_s") else float("nan")
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {ratio:.2f}x | {mem:.2f} | {mfu} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
