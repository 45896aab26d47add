"""DPO and GRPO of SmolLM2-135M-Instruct with LoRA: lightkit against TRL's DPOTrainer and GRPOTrainer.

    python benchmarks/align_vs_trl.py --seeds 0 1 2 --out benchmarks/results/align-vs-trl-cpu.json

The same jobs on both sides, those of configs/dpo_headlines.yaml and configs/grpo_headlines.yaml:
the packaged SmolLM2-135M-Instruct, LoRA r 16 / alpha 32 / dropout 0 on all linear layers
(`peft_config` for TRL), the model's chat template, bf16 autocast, the same learning rate
(the config's, constant), gradient clipping 1.0, no gradient checkpointing (TRL's configs turn it on by default;
lightkit leaves it off), and the same torch threads.
- DPO: the pairs of `python -m lightkit.data.headline_pairs` (`--pairs`; make align's are the SFT
  model's ranked answers), every pair of the file on both sides, batch 4 pairs, the config's beta,
  sigmoid loss plus the config's `rpo_alpha` x the chosen answers' NLL (TRL: `loss_type` sigmoid
  and sft, `loss_weights`), sequences capped at 320 tokens. TRL gets conversational
  prompt/chosen/rejected rows; with peft its reference is the adapters-off model, as lightkit's.
- GRPO: 4 prompts x 4 generations (TRL: 16 completions per device batch, num_generations 4), 24
  new tokens at the config's temperature, beta 0, the `grpo` loss on both sides (TRL's default is `dapo`),
  one iteration, and the same three reward callables and weights (lightkit.rewards.text; TRL
  gets them through a thin adapter to its keyword convention).

TRL's options are its documented best for this job on this machine: DPO with
`precompute_ref_log_probs` (its counterpart of lightkit's reference cache; TRL 1.16 already
computes log-probs through a chunked fused LM head, the counterpart of lightkit's, and its
`padding_free` falls back to padding), gradient checkpointing off as on lightkit's side.

Measured per side, each in its own process, the side that goes first alternating between rounds:
wall time per optimizer step (median of the timed steps, after `--warmup`), the whole training
call (`train_wall_s`: loading, TRL's reference precomputation and every step), DPO's trained tokens
per second, GRPO's step split into generation, rewards and the rest (log-probs, loss, backward,
update) with the autocast each part ran under, peak RSS at the end of training, and after the same
number of steps, greedy answers to the same held-out articles scored with the same reward and
ROUGE-L. One round per seed in `--seeds` (each side takes the round's seed for data order, LoRA
init and sampling); the tables give medians over rounds, the spread of the per-round ratios, and
the scores' mean ± sd over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from align_report import ROOT, held_out, reward_fn
from measure import peak_rss_mib, peer_header, run_side, write_result

from lightkit.io.measure import median, stopwatch
from lightkit.metrics.answers import answer_scores, greedy_answers

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
JOBS = ("dpo", "grpo")
# TRL's documented DPO speed options that fit this job: the reference's log-probs computed once
# before training (lightkit caches them on first sight; it costs TRL one pass, counted in
# train_wall_s). TRL 1.16's DPO already takes log-probs through a chunked fused LM head (no full
# logits; `use_logits_to_keep` is gone), and its `padding_free` falls back to padding.
TRL_DPO_SPEED = {"precompute_ref_log_probs": True, "precompute_ref_batch_size": 16}
SIDES = ("lightkit", "trl")


class StepTimer:
    """Wall time of each optimizer step (a Lightning callback and a transformers callback in one)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.start = 0.0

    def begin(self) -> None:
        self.start = time.perf_counter()

    def end(self) -> None:
        self.times.append(time.perf_counter() - self.start)


class Phases:
    """Seconds spent in named parts of the timed steps (generation, rewards), counted by wrapping
    the method that does each part on one side's object, the autocast each part ran under, and the
    tokens the timed steps trained on."""

    def __init__(self, timer: StepTimer, warmup: int) -> None:
        self.timer, self.warmup = timer, warmup
        self.seconds: dict[str, float] = {}
        self.autocast: dict[str, str | None] = {}
        self.tokens = 0

    def timed(self) -> bool:
        return len(self.timer.times) >= self.warmup

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        import torch

        original = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            on = torch.is_autocast_enabled("cpu")
            self.autocast.setdefault(phase, str(torch.get_autocast_dtype("cpu")) if on else None)
            timed, ms = self.timed(), []
            with stopwatch(ms):
                out = original(*args, **kwargs)
            if timed:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + ms[0] / 1000
            return out

        setattr(owner, name, wrapped)

    def count(self, attention_mask: Any) -> None:
        if self.timed():
            self.tokens += int(attention_mask.sum())


def lightning_timer(timer: StepTimer, phases: Phases, count_tokens: bool) -> Any:
    import lightning as L

    class T(L.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: dict[str, Any], *args: Any) -> None:
            if count_tokens:  # DPO: the pairs' tokens (GRPO's batch holds prompts only)
                phases.count(batch["attention_mask"])
            timer.begin()

        def on_train_batch_end(self, *args: Any) -> None:
            timer.end()

    return T()


def hf_timer(timer: StepTimer) -> Any:
    from transformers import TrainerCallback

    class T(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            timer.begin()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            timer.end()

    return T()


def settings(job: str) -> dict[str, Any]:
    """The model arguments of configs/<job>_headlines.yaml: the benchmark runs those jobs."""
    import yaml

    return yaml.safe_load((ROOT / "configs" / f"{job}_headlines.yaml").read_text())["model"]["init_args"]


def trl_dpo_loss(job: dict[str, Any]) -> dict[str, Any]:
    """The DPO job's loss as TRL 1.16 spells it. TRL has no `rpo_alpha` any more: RPO is the
    `sigmoid` loss plus its `sft` loss (the chosen tokens' NLL, a mean over them, as lightkit's)
    weighted by `loss_weights`."""
    if job.get("rpo_alpha"):
        return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, float(job["rpo_alpha"])]}
    return {"loss_type": ["sigmoid"]}


def run_lightkit(args: argparse.Namespace, timer: StepTimer, phases: Phases) -> Any:
    import lightning as L

    from lightkit.data import HeadlineDataModule, PolicyPreferenceDataModule
    from lightkit.tasks import DPOTask, GRPOTask

    L.seed_everything(args.seed)
    job = settings(args.job)
    common = {"pretrained": MODEL, "tokenizer": MODEL, "peft": LORA, "learning_rate": job["learning_rate"],
              "save_dir": str(Path(args.scratch) / "hf")}  # fmt: skip
    if args.job == "dpo":
        task = DPOTask(beta=job["beta"], rpo_alpha=job.get("rpo_alpha"), **common)
        # Every pair trains, as on TRL's side (the validation file is required, never run: limit_val_batches 0).
        dm = PolicyPreferenceDataModule(tokenizer=MODEL, train_file=args.pairs, val_file=args.pairs, holdout=(0.0, 0.0),
                                        batch_size=4, max_length=320)  # fmt: skip
    else:
        task = GRPOTask(reward_fn=job["reward_fn"], reward_weights=job["reward_weights"], num_generations=4, beta=0.0,
                        temperature=job["temperature"], max_new_tokens=24, loss_type="grpo", **common)  # fmt: skip
        dm = HeadlineDataModule(tokenizer=MODEL, prompts_only=True, holdout=(0.02, 0.05), split_seed=13,
                                batch_size=4, max_length=320)  # fmt: skip
    trainer = L.Trainer(max_steps=args.warmup + args.steps, precision="bf16-mixed", accelerator="cpu", logger=False,
                        gradient_clip_val=1.0 if args.job == "dpo" else None, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, default_root_dir=args.scratch,
                        callbacks=[lightning_timer(timer, phases, args.job == "dpo")])  # fmt: skip
    if args.job == "grpo":
        phases.wrap(task, "sample", "generation")
        phases.wrap(task, "scores", "rewards")
    trainer.fit(task, datamodule=dm)  # GRPO clips per update itself (max_grad_norm 1.0)
    return task.model


def run_trl(args: argparse.Namespace, timer: StepTimer, phases: Phases) -> Any:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightkit.models.resources import resolve_path

    path = resolve_path(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=LORA["target_modules"], task_type="CAUSAL_LM")  # fmt: skip
    job = settings(args.job)
    common = {"output_dir": args.scratch, "max_steps": args.warmup + args.steps, "learning_rate": job["learning_rate"],
              "lr_scheduler_type": "constant", "warmup_steps": 0, "bf16": True, "use_cpu": True, "report_to": [],
              "save_strategy": "no", "logging_strategy": "no", "seed": args.seed, "disable_tqdm": True,
              "dataloader_num_workers": 0, "gradient_checkpointing": False, "max_grad_norm": 1.0,
              "weight_decay": 0.01}  # fmt: skip
    if args.job == "dpo":
        from trl import DPOConfig, DPOTrainer

        rows = [json.loads(line) for line in Path(args.pairs).read_text().splitlines()]
        data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                   "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                   "rejected": [{"role": "assistant", "content": r["rejected"]}]}
                                  for r in rows])  # fmt: skip
        config = DPOConfig(per_device_train_batch_size=4, beta=job["beta"], max_length=320, **trl_dpo_loss(job),
                           **TRL_DPO_SPEED, **common)  # fmt: skip
        trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                             peft_config=lora, callbacks=[hf_timer(timer)])  # fmt: skip
        compute_loss = trainer.compute_loss

        def counted(model: Any, inputs: dict[str, Any], *rest: Any, **kwargs: Any) -> Any:
            phases.count(inputs["attention_mask"])
            return compute_loss(model, inputs, *rest, **kwargs)

        trainer.compute_loss = counted
    else:
        from trl import GRPOConfig, GRPOTrainer

        from lightkit.data import HeadlineDataModule

        funcs = [trl_reward(p) for p in job["reward_fn"]]

        dm = HeadlineDataModule(tokenizer=MODEL, holdout=(0.02, 0.05), split_seed=13, max_length=320)
        train = dm.splits(dm._read, dm.split_key)["train"]
        data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["user"]}], "reference": r["reference"]}
                                  for r in train])  # fmt: skip
        config = GRPOConfig(per_device_train_batch_size=16, num_generations=4, max_completion_length=24,
                            temperature=job["temperature"], beta=0.0, loss_type="grpo", num_iterations=1,
                            reward_weights=job["reward_weights"], **common)  # fmt: skip
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=config, train_dataset=data,
                              processing_class=tokenizer, peft_config=lora, callbacks=[hf_timer(timer)])  # fmt: skip
        phases.wrap(trainer, "_generate", "generation")
        phases.wrap(trainer, "_calculate_rewards", "rewards")
    trainer.train()  # DPO: the reference log-probs are precomputed in here, before the first step
    return trainer.model


def trl_reward(path: str) -> Any:
    """A lightkit reward callable under TRL's convention: keyword `prompts` and `completions`, as
    chat messages for conversational data, dataset columns as further keywords."""
    from lightkit.rewards.scoring import CallableReward

    fn = CallableReward(path)  # passes `reference` on to a callable that names it, as lightkit does

    def reward(prompts: list, completions: list, reference: list[str], **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        asks = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
        return fn(asks, texts, reference=reference).tolist()

    reward.__name__ = fn.fn.__name__
    return reward


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    timer = StepTimer()
    phases = Phases(timer, args.warmup)
    start = time.perf_counter()
    model = (run_trl if args.side == "trl" else run_lightkit)(args, timer, phases)
    train_wall_s = time.perf_counter() - start  # model loading, any precomputation and every step
    peak = peak_rss_mib()
    timed = timer.times[args.warmup :]
    tokenizer, rows = held_out()
    rows = rows[: args.eval_rows]
    model.eval()
    prompts = [r["gen_prompt"] for r in rows]
    out = greedy_answers(model, tokenizer, prompts)
    held = answer_scores(out, prompts, [r["reference"] for r in rows], reward_fn())
    result = {"s_per_step": median(timed), "steps_timed": len(timed), "train_wall_s": train_wall_s,
              "peak_rss_mib": peak, "held_out_reward": held["reward"], "held_out_rougeL": held["rougeL"],
              "held_out_words": held["answer_words"]}  # fmt: skip
    if phases.tokens:
        result["tokens_per_s"] = phases.tokens / sum(timed)
    if phases.seconds:  # GRPO: where a step's time goes
        for phase, seconds in phases.seconds.items():
            result[f"{phase}_s_per_step"] = seconds / len(timed)
        result["rest_s_per_step"] = statistics.fmean(timed) - sum(phases.seconds.values()) / len(timed)
        result["autocast"] = phases.autocast
    print("RESULT " + json.dumps(result))


def compare(job: str, args: argparse.Namespace) -> dict[str, Any]:
    """One round per seed, the two sides back to back in each (interleaved, so a slower stretch of the
    machine hits both); medians over the rounds, and each held-out score's mean and spread over seeds,
    because a few steps of RL from one seed move the held-out scores by more than the sides differ."""
    steps = args.dpo_steps if job == "dpo" else args.grpo_steps
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for i, seed in enumerate(args.seeds):
        for side in SIDES if i % 2 == 0 else SIDES[::-1]:  # who goes first alternates between rounds
            argv = ["--side", side, "--job", job, "--steps", str(steps), "--seed", str(seed), *sys.argv[1:]]
            runs[side].append(run_side(__file__, argv, args.threads, f"{job} {side} seed {seed}"))
            print(job, side, seed, runs[side][-1], flush=True)
    medians = {
        side: {k: median(r[k] for r in rs) if k != "autocast" else rs[0][k] for k in rs[0]} for side, rs in runs.items()
    }
    spread = {
        side: {k: {"mean": statistics.mean(r[k] for r in rs), "stdev": statistics.pstdev(r[k] for r in rs)}
               for k in ("held_out_reward", "held_out_rougeL")}
        for side, rs in runs.items()
    }  # fmt: skip
    lk, peer = medians["lightkit"], medians["trl"]
    per_round = [t["s_per_step"] / k["s_per_step"] for k, t in zip(runs["lightkit"], runs["trl"])]
    return {**medians, "over_seeds": spread, "runs": runs, "speedup": peer["s_per_step"] / lk["s_per_step"],
            "speedup_spread": {"min": min(per_round), "max": max(per_round)},
            "speedup_train_wall": peer["train_wall_s"] / lk["train_wall_s"],
            "rss_ratio": lk["peak_rss_mib"] / peer["peak_rss_mib"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=SIDES, default=None, help="internal: run one side")
    ap.add_argument("--job", choices=JOBS, default=None, help="internal: run one job")
    ap.add_argument("--jobs", choices=JOBS, nargs="+", default=list(JOBS))
    ap.add_argument("--dpo_steps", type=int, default=8)
    ap.add_argument("--grpo_steps", type=int, default=6)
    ap.add_argument("--steps", type=int, default=None, help="internal")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval_rows", type=int, default=48)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one round per seed, both sides alike")
    ap.add_argument("--seed", type=int, default=0, help="internal: this round's seed")
    ap.add_argument("--pairs", default="runs/align/pairs.jsonl")
    ap.add_argument("--scratch", default="/tmp/lightkit-align-bench")
    ap.add_argument("--out", default="benchmarks/results/align-vs-trl-cpu.json")
    args = ap.parse_args()
    if args.side:
        child(args)
        return
    results = {job: compare(job, args) for job in args.jobs}
    result = {
        **peer_header(
            "LoRA DPO and GRPO of SmolLM2-135M-Instruct on BBC headlines: lightkit vs TRL, same jobs",
            "align_vs_trl.py",
            args.threads,
            sys.argv[1:],
        ),
        "job": {
            "model": MODEL,
            "lora": LORA,
            "precision": "bf16 autocast",
            "warmup_steps_untimed": args.warmup,
            "trl_dpo_speed_options": TRL_DPO_SPEED,
            "dpo": {
                "steps_timed": args.dpo_steps,
                "pairs_per_batch": 4,
                "beta": settings("dpo")["beta"],
                "rpo_alpha": settings("dpo").get("rpo_alpha"),
                "learning_rate": settings("dpo")["learning_rate"],
                "max_length": 320,
            },
            "grpo": {
                "steps_timed": args.grpo_steps,
                "prompts_per_batch": 4,
                "num_generations": 4,
                "max_new_tokens": 24,
                "temperature": settings("grpo")["temperature"],
                "beta": 0.0,
                "loss_type": "grpo",
                "learning_rate": settings("grpo")["learning_rate"],
            },
            "eval_rows": args.eval_rows,
            "seeds": args.seeds,
        },
        **results,
    }
    write_result(args.out, result)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
