#!/usr/bin/env bash
# What to run first on a GPU machine: the versions it has, then the paths only a GPU takes, through the real CLI
# on a scratch student built on the spot (no hub, no network): teacher rollouts, SFT in fp32 and LoRA + bf16,
# evaluation, GRPO from a full and from a LoRA student; then what needs more than one GPU or an extra: the vLLM
# policy and GRPO with colocated vLLM (vllm installed), SFT with DDP on every GPU (two GPUs or more), a ZeRO-3 load
# and two steps (deepspeed installed). Each step prints PASS, FAIL with its log tail, or SKIP with the reason; the
# whole takes about 3-6 minutes. Run it from the repository root after `pip install -e ".[vllm,deepspeed]"`:
#   bash scripts/gpu-smoke.sh                 # logs under /tmp/agentdistill-gpu-smoke
# Environment: PY (the python to use, default python3), W (work directory), OUT (where smoke.log goes).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
W=${W:-/tmp/agentdistill-gpu-smoke}
OUT=${OUT:-$W}
PY=${PY:-python3}
rm -rf "$W/run"; mkdir -p "$W/run" "$OUT"
RUN=$W/run
LOG=$OUT/smoke.log; : > "$LOG"
$PY - <<'PY' 2>&1 | tee -a "$LOG"
import importlib, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
for name in ("transformers", "trl", "accelerate", "peft", "datasets", "gymnasium", "vllm", "deepspeed"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as error:
        print(name, "missing:", type(error).__name__)
PY
step() {
  local name=$1; shift; local start=$SECONDS
  if "$@" > "$RUN/$name.log" 2>&1; then echo "PASS $name ($((SECONDS - start)) s)" | tee -a "$LOG"
  else echo "FAIL $name ($((SECONDS - start)) s)" | tee -a "$LOG"; tail -30 "$RUN/$name.log" | tee -a "$LOG"; fi
}
skip() { echo "SKIP $1 ($2)" | tee -a "$LOG"; }
has() { $PY -c "import $1" > /dev/null 2>&1; }
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
CLI="$PY -m agentdistill.cli"
sed -e 's/^max_steps: .*/max_steps: 20/' configs/distill/sft_cpu_tiny.yaml > "$RUN/sft.yaml"
sed -e 's/^lora: .*/lora: true/' -e 's/^bf16: .*/bf16: true/' "$RUN/sft.yaml" > "$RUN/sft_lora_bf16.yaml"
sed -e 's/^eval_tasks: .*/eval_tasks: 16/' -e 's/^train_tasks: .*/train_tasks: 64/' configs/rl/grpo_cpu_tiny.yaml > "$RUN/grpo.yaml"
sed -e 's/^lora: .*/lora: true/' "$RUN/grpo.yaml" > "$RUN/grpo_lora.yaml"
step rollout $CLI rollout --env AgentMath-Synthetic-v0 --policy expert --episodes 64 --num-envs 8 --out "$RUN/teacher.jsonl" --no-progress
step sft_full_fp32 $CLI distill --trajectories "$RUN/teacher.jsonl" --student scratch:tiny --out "$RUN/student" --config "$RUN/sft.yaml" --no-wandb
step sft_lora_bf16 $CLI distill --trajectories "$RUN/teacher.jsonl" --student scratch:tiny --out "$RUN/student_lora" --config "$RUN/sft_lora_bf16.yaml" --no-wandb
step eval_hf $CLI eval --policy "hf:$RUN/student" --tasks AgentMath-Synthetic-v0 --limit 16 --prompt-variant short --out "$RUN/eval" --no-progress --max-new-tokens 96
step rl_full $CLI rl --env AgentMath-Synthetic-v0 --policy "hf:$RUN/student" --out "$RUN/rl" --config "$RUN/grpo.yaml" --steps 2 --no-wandb --no-progress
step rl_from_lora $CLI rl --env AgentMath-Synthetic-v0 --policy "hf:$RUN/student_lora" --out "$RUN/rl_lora" --config "$RUN/grpo_lora.yaml" --steps 2 --no-wandb --no-progress
sed -e 's/^rollout_backend: .*//' -e '$a rollout_backend: vllm' "$RUN/grpo.yaml" > "$RUN/grpo_vllm.yaml"
sed -e 's/^max_steps: .*/max_steps: 2/' "$RUN/sft.yaml" > "$RUN/sft_two_steps.yaml"
if has vllm; then
  step vllm_policy $CLI rollout --env AgentMath-Synthetic-v0 --policy "vllm:$RUN/student" --episodes 16 --num-envs 8 --env-arg prompt_variant=short --max-new-tokens 96 --out "$RUN/vllm.jsonl" --no-progress
  step rl_vllm_colocated $CLI rl --env AgentMath-Synthetic-v0 --policy "hf:$RUN/student" --out "$RUN/rl_vllm" --config "$RUN/grpo_vllm.yaml" --steps 2 --no-wandb --no-progress
else
  skip vllm_policy "vllm not installed"; skip rl_vllm_colocated "vllm not installed"
fi
if [ "$GPUS" -ge 2 ]; then
  step sft_ddp_all_gpus $CLI distill --trajectories "$RUN/teacher.jsonl" --student scratch:tiny --out "$RUN/student_ddp" --config "$RUN/sft_two_steps.yaml" --num-processes "$GPUS" --accelerate-config configs/accelerate/ddp.yaml --no-wandb
else
  skip sft_ddp_all_gpus "$GPUS GPU(s): DDP needs two or more"
fi
if has deepspeed && [ "$GPUS" -ge 1 ]; then
  step sft_zero3 $CLI distill --trajectories "$RUN/teacher.jsonl" --student scratch:tiny --out "$RUN/student_zero3" --config "$RUN/sft_two_steps.yaml" --num-processes "$GPUS" --accelerate-config configs/accelerate/deepspeed_zero3.yaml --no-wandb
else
  skip sft_zero3 "deepspeed not installed or no GPU"
fi
for file in "$RUN"/student/sft_result.json "$RUN"/rl/rl_result.json "$RUN"/rl_lora/rl_result.json "$RUN"/*/ranks/rank-0.json; do
  [ -f "$file" ] && { echo "== $file"; head -c 1500 "$file"; echo; } >> "$LOG"
done
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >> "$LOG"
grep -c "^FAIL" "$LOG" | { read -r failed; echo "$failed step(s) failed; log: $LOG"; [ "$failed" = 0 ]; }
