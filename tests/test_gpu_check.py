"""benchmarks/gpu_check.sh's CPU-side logic: no CUDA device here, so the check runs its own path on CPU with a tiny
model, in processes where Ray and the pipeline-only packages cannot be imported (the GPU machine has neither), and
its target lines are checked on given figures. The CUDA figures themselves need a GPU (benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from train_bench import TARGETS, gpu_check_summary  # noqa: E402

# what the GPU machine lacks (PyTorch, transformers, tokenizers, numpy and pyarrow are all it has): a module set to
# None in sys.modules imports as missing, and importlib.util.find_spec reports it absent, as transformers checks
ABSENT = ("ray", "xxhash", "PIL", "numba", "rensa", "datasets", "tiktoken", "polars", "scipy", "sklearn",
          "webdataset", "megatron", "bitsandbytes", "flash_attn")


def test_gpu_check_trains_on_the_packed_sample_without_ray_or_the_pipeline_packages(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nfor m in {ABSENT!r}:\n    sys.modules[m] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    args = ["--gpu-check", "--device", "cpu", "--no-compile", "--hidden", "32", "--layers", "1", "--heads", "4",
            "--seq-len", "128", "--micro", "2", "--steps", "2", "--warmup", "1", "--max-docs", "20",
            "--only", "adamw / document attention", "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json")]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_bench.py"), *args], env=env,
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["packing"]["packed_documents"] == 20 and report["packing"]["cropped_tokens"] == 0
    run = report["settings"]["adamw / document attention"]
    assert run["optimizer"] == "AdamW" and run["attention"] == "sdpa" and run["seq_len"] == 128
    assert run["loss"] == pytest.approx(10.8, abs=0.3)  # near uniform over SmolLM2's 49,152 ids at the start
    assert 0 < run["tokens_per_s"] <= run["slots_per_s"] and 0 <= run["data_stall"] < 1
    params = round(run["params_m"] * 1e6)
    # two fp32 moments per parameter, a fp32 step per tensor: embedding, q/k/v/o, gate/up/down, 2 layer norms, final
    assert run["optimizer_state_bytes"] == 8 * params + 4 * 11
    assert "target data stall < 5%" in proc.stdout and "| adamw / document attention | AdamW | sdpa |" in proc.stdout


def test_gpu_check_targets_are_met_or_missed_on_the_figures():
    base = {"attention": "sdpa", "tokens_per_s": 1e5, "peak_mem_gb": 20.0, "warmup_s": 50.0}
    results = {"adamw": base | {"optimizer": "AdamW", "mfu": 0.41, "data_stall": 0.01,
                                "optimizer_state_bytes": 1_000_000_000},
               "8bit": base | {"optimizer": "PagedAdamW8bit", "mfu": 0.35, "data_stall": 0.07,
                               "optimizer_state_bytes": 260_000_000},
               "cut": {"error": "over the 270 s deadline"}}
    lines = gpu_check_summary(results)
    assert lines[-3:] == [f"target MFU >= {TARGETS['mfu']:.0%}: met (41.0%, best setting)",
                          f"target data stall < {TARGETS['data_stall']:.0%}: MISSED (7.0%, worst setting)",
                          f"target 8-bit state <= {TARGETS['state_ratio']:.0%} of AdamW's: met (26.0%)"]
    assert "| cut | failed: over the 270 s deadline |" in "\n".join(lines)


def test_gpu_check_script_stops_with_the_reason_without_cuda():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the script would run the check")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 2 and "no CUDA device visible to PyTorch" in proc.stderr
