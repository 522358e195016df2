#!/usr/bin/env bash
# The GPU check, one prepared script (at most 5 minutes on an H100/H200): a ~125 M-parameter Llama trained on the
# packed sample for a fixed number of steps with the project's own model, optimizer, collate and step code
# (benchmarks/train_bench.py --gpu-check: bf16, SDPA or flash_attention_2, torch.compile, packed documents,
# AdamW vs PagedAdamW8bit), printing tokens/s, MFU, peak memory, optimizer-state bytes and data stall, then the
# targets (MFU >= 40 %, data stall < 5 %, 8-bit state <= 30 % of AdamW's). Figures: benchmarks/out/gpu_check/.
#
#   benchmarks/gpu_check.sh [WHEEL_DIR]      (default benchmarks/out/wheels: git-ignored, carried to a device)
#
# Needs PyTorch with CUDA, transformers, tokenizers, numpy and pyarrow; no Ray and no package index. A missing
# bitsandbytes (or flash_attn) is installed from WHEEL_DIR only (pip --no-index --no-deps), e.g. after
#   pip download bitsandbytes==0.50.2 --no-deps --only-binary=:all: -d benchmarks/out/wheels  (43 MB; CUDA 11.8-13.2)
# Without a bitsandbytes wheel the 8-bit setting fails and says so; the others run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WHEELS="${1:-benchmarks/out/wheels}"

"$PY" -c 'import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: no CUDA device visible to PyTorch {torch.__version__}: run it on a GPU machine")' || exit 2
for pkg in bitsandbytes flash_attn; do
  if ! "$PY" -c "import $pkg" 2>/dev/null; then
    if ls "$WHEELS"/"${pkg}"-*.whl >/dev/null 2>&1; then
      "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" "$pkg"
    else
      echo "gpu_check: $pkg is not installed and $WHEELS has no wheel of it" >&2
    fi
  fi
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda,
                                            "transformers", transformers.__version__)'
# the ~125 M Llama (122.7 M: 12 layers x 768, SmolLM2's 49,152-token vocabulary, tied embeddings), 16 rows of 2,048
# per step (40 % MFU on an H200 is ~410k tokens/s: 0.96 GFLOP per token)
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec timeout 295 "$PY" benchmarks/train_bench.py --gpu-check \
  --hidden 768 --layers 12 --heads 12 --seq-len 2048 --micro 16 --warmup 5 --steps 40 --deadline 270 \
  --json benchmarks/out/gpu_check/report.json
