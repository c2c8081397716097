#!/usr/bin/env bash
# One session on a lent GPU machine (its image has CUDA torch but none of our dependencies):
# install the wheels carried in .whl/ (tensordict, torchrl, captum, tdhook, mujoco,
# mujoco-torch, gymnasium, chess, ...) and this repository into /tmp/site, then run the CUDA
# tests, the GPU benchmarks and a short Connect Four training on the GPU, writing logs and
# RESULTS.md/results.json into OUT. Run from the repository root: bash benchmarks/gpu_session.sh OUT
# (GPU_TIME_BUDGET: seconds after which gpu_rollout starts no new case, default 130;
# GPU_TRAIN=0 skips the training run)
set -u
OUT=$(realpath -m "${1:-gpu-out}")
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
stamp() { echo "[$(date +%T)] $*"; }
{
  stamp start
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  git rev-parse --short HEAD 2>/dev/null || true
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
    --no-cache-dir --target /tmp/site . || exit 1
  export PYTHONPATH=/tmp/site
  # work outside the checkout, so that the installed tdhook_rl (with its mapped envs/agents)
  # is the one imported
  rm -rf /tmp/w && mkdir /tmp/w && cp -r tests benchmarks pyproject.toml /tmp/w/ && cd /tmp/w
  python3 -c "import torch, tensordict, torchrl, tdhook_rl; print('torch', torch.__version__, \
'tensordict', tensordict.__version__, 'torchrl', torchrl.__version__, torch.cuda.get_device_name())"
  stamp tests
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu -rs 2>&1 | tee "$OUT/tests_gpu.log" | tail -25
  stamp benchmarks
  timeout 270 python3 -m benchmarks run --device cuda --only multi_target_ig --only ig_memory \
    --only gpu_rollout --time-budget "${GPU_TIME_BUDGET:-130}" --output-dir "$OUT" 2>&1 | tail -20
  stamp connect-four training
  [ "${GPU_TRAIN:-1}" = 0 ] || timeout 60 python3 -m tdhook_rl.agents.connect_four.train --device cuda --iterations 15 \
    --games 200 --out /tmp/c4 2>&1 | tail -15 | tee "$OUT/c4_train.log"
  stamp end
} 2>&1 | tee "$OUT/session.log"
