"""Render benchmark result JSON as the Markdown tables the README shows.

python benchmarks/to_markdown.py benchmarks/results/inference-cpu.json   # writes ...-cpu.md
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path


def inference_table(result: dict) -> str:
    rows = result["rows"]
    engines = [k for k in rows[0] if k.startswith(("pytorch_", "ort_"))]
    head = (
        "| shape | "
        + " | ".join(f"{e} median / p90 ms" for e in engines)
        + " | "
        + " | ".join(f"{k} speedup" for k in rows[0]["speedup_vs_pytorch"])
        + " |"
    )
    lines = [head, "|" + "---|" * (1 + len(engines) + len(rows[0]["speedup_vs_pytorch"]))]
    for row in rows:
        cells = [f"{row[e]['median_ms']:.1f} / {row[e]['p90_ms']:.1f}" for e in engines]
        speed = [f"{v:.2f}x" for v in row["speedup_vs_pytorch"].values()]
        lines.append(f"| {row['shape']} | " + " | ".join(cells + speed) + " |")
    sizes = ", ".join(
        f"{f} {info['bytes'] / 2**20:.1f} MiB ({info['parity']['metric']} {info['parity']['onnx']:.4f})"
        for f, info in result["forms"].items()
    )
    decoder = decoder_table(result["decoder"]) if "decoder" in result else []
    return "\n".join(
        [
            f"Device: {result['device']}; {result['date']}; versions {result['versions']}.",
            "",
            *lines,
            "",
            f"Artifacts: {sizes}.",
            "",
            *decoder,
            f"Command: `{result['command']}`",
            "",
        ]
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def mean_sd(x: dict, fmt: str, sd_fmt: str = ".3f") -> str:
    """An `align_seeds.spread` (mean, sd, n) as "mean ± sd"; one run has no spread to show."""
    return format(x["mean"], fmt) + (f" ± {format(x['sd'], sd_fmt)}" if x["n"] > 1 else "")


def ms(cell: dict) -> str:
    return f"{cell['median_ms']:.2f}" if "median_ms" in cell else "n/a"


def decoder_table(dec: dict) -> list[str]:
    """benchmarks/lm_inference.py's rows: prefill and per-token decode ms per engine and batch."""
    rows = dec["rows"]
    names = [k for k in rows[0] if k.startswith(("pytorch_", "ort_"))]
    lines = [
        "| engine | "
        + " | ".join(
            f"batch {r['batch']}: prefill {r['prompt']} ms | batch {r['batch']}: decode ms/token" for r in rows
        )
        + " |",
        "|" + "---|" * (1 + 2 * len(rows)),
    ]
    for name in names:
        cells = []
        for r in rows:
            c = r[name]
            cells += [ms(c["prefill_ms"]), f"{c['decode_ms_per_token']:.2f}"] if "prefill_ms" in c else ["n/a", "n/a"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sizes = ", ".join(
        f"{f} {i['bytes'] / 2**20:.1f} MiB ({i['parity']['metric']} {i['parity']['onnx']:.2f})"
        for f, i in dec["forms"].items()
    )
    return [*lines, "", f"Causal LM artifacts: {sizes}.", ""]


def gpu_inference_tables(result: dict) -> str:
    """benchmarks/inference.py: one line per engine, median ms per shape (see its docstring)."""
    enc = result["encoder"]
    shapes = [r["shape"] for r in enc["rows"]]
    engines = [k for k in enc["rows"][0] if k.startswith(("pytorch_", "ort_"))]
    modes = {"pytorch": ("device", "host_copies"), "ort": ("io_binding", "io_binding_cuda_graph", "host_copies")}
    head = "| engine | mode | " + " | ".join(f"{s} ms" for s in shapes) + " |"
    lines = [head, "|" + "---|" * (2 + len(shapes))]
    for engine in engines:
        for mode in modes[engine.split("_")[0]]:
            lines.append(
                f"| {engine} | {mode} | " + " | ".join(ms(row[engine].get(mode, {})) for row in enc["rows"]) + " |"
            )
    forms = ", ".join(
        f"{f} {i['bytes'] / 2**20:.1f} MiB ({i['parity']['metric']} {i['parity']['onnx']:.4f} vs PyTorch "
        f"{i['parity']['pytorch']:.4f}, "
        f"GPU-ready {i['gpu_ready']})"
        for f, i in enc["forms"].items()
    )
    out = [
        f"Device: {result['device']}; {result['date']}; versions {result['versions']}.",
        "",
        *lines,
        "",
        f"Artifacts: {forms}.",
        "",
    ]
    if "decoder" in result:
        out += decoder_table(result["decoder"])
    return "\n".join([*out, f"Command: `{result['command']}`", ""])


def train_table(result: dict) -> str:
    lines = ["| | tokens/s | samples/s | peak memory MiB | ratio |", "|---|---|---|---|---|"]
    for name in ("lightkit", "hf_trainer"):
        r = result[name]
        ratio = f"**{result['ratio_tokens_per_s']:.2f}x**" if name == "lightkit" else "1.00"
        if name == "lightkit" and result.get("verdict") == "parity":  # the spread of the rounds holds 1.0
            ratio = f"**parity** ({result['ratio_tokens_per_s']:.2f}x of the medians)"
        lines.append(
            f"| {name} | {r['tokens_per_s']:.0f} | {r['samples_per_s']:.1f} | {r['peak_memory_mib']:.0f} | {ratio} |"
        )
    mfu = result.get("mfu")
    extra = ""
    if "order" in result:
        extra = f"Batch order: lightkit {result['order']['lightkit']}, Trainer {result['order']['hf_trainer']}. "
    if "ratio_spread" in result:
        s, opts = result["ratio_spread"], result["optimizers"]
        extra += (
            f"Per-round ratios over {s['n']} rounds (each side in its own process, order alternating): median "
            f"{s['median']:.2f}x, {s['min']:.2f}x to {s['max']:.2f}x: **{result['verdict']}**. Both clip gradients at "
            f"{result['max_grad_norm']}; optimizers: "
            + ", ".join(f"{side} {o['class']} (fused {o['fused']})" for side, o in opts.items())
            + ". "
        )
    if mfu:
        extra += (
            f"MFU (6N per token over the measured {mfu['measured_bf16_tflops']:.0f} TFLOP/s bf16 rate): lightkit "
            f"{mfu['lightkit_mfu']:.1%}, "
            f"Trainer {mfu['hf_trainer_mfu']:.1%}; with the attention term: {mfu['lightkit_mfu_with_attention']:.1%} "
            f"/ {mfu['hf_trainer_mfu_with_attention']:.1%}."
        )
    return "\n".join(
        [
            f"Device: {result['device']}; {result['date']}; {result.get('task', 'ner')} {result['model']} "
            f"({result['parameters'] / 1e6:.1f}M parameters).",
            "",
            *lines,
            "",
            extra,
            "",
            *([result["context"], ""] if "context" in result else []),
            f"Command: `{result['command']}`",
            "",
        ]
    )


def embedding_table(result: dict) -> str:
    """benchmarks/embedding_tables.py: the metric per table quantisation scheme."""
    metric = result["metric"]
    lines = [
        f"| scheme | tables MiB | token table mean abs error | {metric} | change (points) | |",
        "|---|---|---|---|---|---|",
        f"| none (float; size as fp16) | {result['float']['tables_mib_fp16']:.2f} | 0 | "
        f"{100 * result['float'][metric]:.2f} | | |",
    ]
    for name, r in result["schemes"].items():
        lines.append(
            f"| {name} | {r['tables_mib']:.2f} | {r['mean_abs_error'][result['float']['token_table']]:.5f} | "
            f"{100 * r[metric]:.2f} | {100 * r['change']:+.2f} | {'lightkit' if r['lightkit'] else ''} |"
        )
    return "\n".join(
        [
            f"Device: {result['device']}; {result['date']}; versions {result['versions']}; tables "
            f"{', '.join(result['float']['tables'])}.",
            "",
            *lines,
            "",
            f"Command: `{result['command']}`",
            "",
        ]
    )


def targets_lines(result: dict) -> list[str]:
    """The performance targets as checked in the file (benchmarks/targets.py): met, or short by how much."""
    if "targets" not in result:
        return []
    if not result["targets"]:
        return [f"Targets: {result.get('targets_note', 'none apply')}.", ""]
    lines = ["| target | measured | |", "|---|---|---|"]
    for t in result["targets"]:
        verdict = "met" if t["met"] else ("not measured" if t["measured"] is None else f"missed by {t['short_by']:.3g}")
        lines.append(
            f"| {t['what']} {t['target']} | {'' if t['measured'] is None else format(t['measured'], '.4g')} | "
            f"{verdict} |"
        )
    return [*lines, ""]


def with_command(head: str, lines: list[str], result: dict) -> str:
    """A result's table under its one-line header, with the command that reproduces it."""
    return "\n".join([head, "", *lines, "", f"Command: `{result['command']}`", ""])


def samples_table(samples: list[dict], columns: dict[str, str]) -> list[str]:
    """Sample answers side by side: one column per `columns` key, headed by its value."""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(s[k]) for k in columns) + " |" for s in samples]


def sft_table(result: dict) -> str:
    """benchmarks/sft_report.py: zero-shot against tuned on the held-out articles, with samples."""
    lines = ["| model | ROUGE-1 | ROUGE-2 | ROUGE-L | words per answer |", "|---|---|---|---|---|"]
    for name in ("zero_shot", "tuned"):
        s = result[name]
        cells = [f"{s[k]:.3f}" for k in ("rouge1", "rouge2", "rougeL")] + [f"{s['answer_words']:.1f}"]
        lines.append(f"| {name.replace('_', '-')} | " + " | ".join(cells) + " |")
    samples = samples_table(result["samples"], {"reference": "reference", "zero_shot": "zero-shot", "tuned": "tuned"})
    tuned = result["tuned"]
    head = (
        f"Device: {result['device']}; {result['date']}; {tuned['answers']} held-out articles, "
        f"references {tuned['reference_words']:.1f} words on average."
    )
    return "\n".join([head, "", *lines, "", *samples, "", f"Command: `{result['command']}`", ""])


def trl_table(result: dict) -> str:
    """benchmarks/sft_vs_trl.py: lightkit fit against TRL's SFTTrainer on the same LoRA job."""
    lines = [
        "| | tokens/s | RSS MiB in training steps | peak RSS MiB, loading included | ROUGE-1 | ROUGE-L | "
        "ROUGE-L mean ± sd over seeds | tokens/s vs TRL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sides = [name for name in ("lightkit", "lightkit-full-logits", "trl") if name in result]
    for name in sides:
        r = result[name]
        ratio = result["ratio_tokens_per_s"]
        ratio = f"**{ratio[name]:.2f}x**" if isinstance(ratio, dict) and name in ratio else "1.00"
        rss = [f"{r['step_rss_mib']:.0f}", f"{r['training_peak_rss_mib']:.0f}"]
        spread = result.get("rougeL_over_seeds", {}).get(name)
        seeds = f"{spread['mean']:.3f} ± {spread['stdev']:.3f}" if spread else ""
        cells = [f"{r['tokens_per_s']:.0f}", *rss, f"{r['rouge1']:.3f}", f"{r['rougeL']:.3f}", seeds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    job = result["job"]
    head = (
        f"Device: {result['device']}; {result['date']}; versions {result['versions']}; {job['steps_timed']} timed "
        f"steps after {job['warmup']}, batch {job['batch_size']}, {job['precision']}, ROUGE on {job['eval_rows']} "
        f"held-out articles; medians over seeds {job.get('seeds', [0])}."
    )
    return with_command(head, lines, result)


def kd_table(result: dict) -> str:
    """benchmarks/kd_report.py: a distilled student against its teacher on the held-out articles."""
    lines = [
        "| model | parameters | ROUGE-1 | ROUGE-2 | ROUGE-L | perplexity | words per answer | generate tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("teacher", "student"):
        q = result[name]
        cells = [f"{result['parameters'][name]:,}", *(f"{q[k]:.3f}" for k in ("rouge1", "rouge2", "rougeL")),
                 f"{q['perplexity']:.2f}", f"{q['answer_words']:.1f}", f"{q['generate_tokens_per_s']:.1f}"]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    kept = result["retention"]
    kd = result["kd"]
    summary = (
        f"Student layers {result['student_layers']}, {kd.get('optimizer_steps')} optimizer steps, T "
        f"{kd['kd_temperature']}, KL on the prompt too: {bool(kd.get('kd_prompt'))}. "
        f"{result['parameters']['ratio']:.1%} of the parameters, "
        f"ROUGE-L retention **{kept['rougeL']:.1%}**, perplexity retention (teacher's / student's) "
        f"**{kept['perplexity']:.1%}**, generation **{result['speedup_tokens_per_s']:.2f}x** the teacher's tokens/s."
    )
    samples = samples_table(result["samples"], {"reference": "reference", "teacher": "teacher", "student": "student"})
    gen = result["generation"]
    head = (
        f"Device: {result['device']}; {result['date']}; {result['teacher']['answers']} held-out articles; "
        f"generation: batch {gen['batch']}, {gen['new_tokens']} new tokens on {gen['prompts']} prompts, "
        f"{gen['precision']}, median of {gen['repeats']} interleaved rounds."
    )
    return "\n".join([head, "", *lines, "", summary, "", *samples, "", f"Command: `{result['command']}`", ""])


def align_table(result: dict) -> str:
    """benchmarks/align_report.py: zero-shot, SFT, DPO, PPO and GRPO on the same held-out articles."""
    kl = "kl_to_sft" if "kl_to_sft" in next(iter(result["models"].values())) else "kl_to_reference"  # older results
    lines = [
        f"| model | mean reward | ROUGE-1 | ROUGE-L | KL to {'SFT' if kl == 'kl_to_sft' else 'reference'} "
        "(nats / answer) | words per answer | ended | training wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"zero_shot": "zero-shot", "sft": "SFT", "dpo": "DPO", "ppo": "PPO", "grpo": "GRPO"}
    for name, s in result["models"].items():
        train = f"{s['train_s'] / 60:.1f} min" if s.get("train_s") else ""
        cells = [f"{s['reward']:+.3f}", f"{s['rouge1']:.3f}", f"{s['rougeL']:.3f}", f"{s[kl]:.2f}",
                 f"{s['answer_words']:.1f}", f"{s['ended_frac']:.0%}", train]  # fmt: skip
        lines.append(f"| {names.get(name, name)} | " + " | ".join(cells) + " |")
    notes = []
    if rm := result.get("reward_model"):
        accuracy = rm["held_out_pair_accuracy"]
        notes.append(
            f"Reward model ({rm['model']}): held-out pair accuracy "
            f"{'n/a' if accuracy is None else format(accuracy, '.1%')}; against the callable reward on "
            f"{rm['answers_scored']} held-out answers, Pearson {rm['pearson_with_callable_reward']:.3f}, Spearman "
            f"{rm['spearman_with_callable_reward']:.3f}."
            + (
                f" Spread of the SFT model's answers (sd): learned {sft['learned_sd']:.3f}, callable "
                f"{sft['callable_sd']:.3f}."
                if (sft := rm.get("sd_per_model", {}).get("sft"))
                else ""
            )
        )
    if ran := result.get("settings"):
        each = ("; ".join(f"{names.get(m, m)} " + ", ".join(f"{k} {v}" for k, v in kv.items())
                for m, kv in ran.items() if kv))  # fmt: skip
        notes.append(f"Settings: {each}.")
    if times := result.get("stage_times_s"):
        scored = [s["eval_s"] for s in result["models"].values() if "eval_s" in s]
        scoring = f"; the report's scoring of the models {sum(scored) / 60:.1f} min" if scored else ""
        stages = ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
        notes.append(f"Stage wall times: {stages}{scoring}.")
    columns = {"reference": "reference", **{k: names.get(k, k) for k in result["models"]}}
    samples = samples_table(result["samples"], columns)
    head = (
        f"Device: {result['device']}; {result['date']}; {result['held_out_articles']} held-out articles, greedy "
        f"answers; reward: {result['reward']}."
    )
    body = [head, "", *lines, "", *notes, *([""] if notes else []), *samples]
    return "\n".join([*body, "", f"Command: `{result['command']}`", ""])


def align_seeds_table(result: dict) -> str:
    """benchmarks/align_seeds.py: the RLHF chain over splits and seeds, mean ± sd per model."""
    summary = result["summary"]
    names = {"zero_shot": "zero-shot", "sft": "SFT", "dpo": "DPO", "ppo": "PPO", "grpo": "GRPO"}
    splits = [str(s) for s in result["splits"]]
    lines = [
        "| model | reward | ROUGE-L | KL to SFT | words | "
        + " | ".join(f"reward, split {s}" for s in splits)
        + " | split's share of the variance: reward, ROUGE-L | reward gain over SFT | gain within each run |",
        "|---|---|---|---|---|" + "---|" * len(splits) + "---|---|---|",
    ]
    for model, m in summary.items():

        def cell(metric: str, fmt: str) -> str:
            return mean_sd(m[metric], fmt) if m.get(metric) else ""

        shares = [m[metric].get("between_split_share") for metric in ("reward", "rougeL")]
        gain = m.get("reward_gain_over_sft")
        in_sd = m.get("reward_gain_in_sd")
        paired = m.get("paired_reward_gain")
        cells = [cell("reward", "+.3f"), cell("rougeL", ".3f"), cell("kl_to_sft", ".2f"), cell("answer_words", ".1f"),
                 *(f"{m['reward']['per_split'].get(s, float('nan')):+.3f}" for s in splits),
                 ", ".join(f"{share:.0%}" for share in shares if share is not None),
                 "" if gain is None else f"{gain:+.3f}" + ("" if in_sd is None else f" ({in_sd:+.1f} sd)"),
                 "" if paired is None else mean_sd(paired, "+.3f")
                 + (f" ({paired['mean'] / paired['sd']:+.1f} sd)" if paired["sd"] > 1e-9 else "")]  # fmt: skip
        lines.append(f"| {names.get(model, model)} | " + " | ".join(cells) + " |")
    head = (
        f"Device: {result['device']}; {result['date']}; {plural(len(result['runs']), 'run')} "
        f"({'; '.join(result['runs'])}); "
        "each model scored greedily on its split's held-out articles; mean ± sample sd over the runs."
    )
    if result.get("settings"):  # a changed chain (align_seeds.py --set)
        head += f" Changed from the shipped configs: {', '.join(result['settings'])}."
    if result.get("reused"):  # runs carried over from an earlier result (align_seeds.py --reuse)
        taken = "; ".join(f"{k} (its result of {d})" for k, d in result["reused"].items())
        head += f" Taken from the earlier result file: {taken}."
    if result.get("stages_not_run_here"):  # outputs put in a run's folder from elsewhere
        found = "; ".join(f"{k}: {', '.join(v)}" for k, v in result["stages_not_run_here"].items())
        head += f" Stages whose output came from elsewhere (not timed in the run's folder): {found}."
    # Each run's reward per model, so a mean is never read without the runs behind it.
    shown = [m for m in ("sft", "dpo", "ppo", "grpo") if m in summary]
    with_rm = any(run.get("reward_model") for run in result["runs"].values())  # only chains with PPO train one
    runs = [
        "| run | "
        + " | ".join(f"{names[m]} reward, ROUGE-L" for m in shown)
        + (" | reward model's held-out pair accuracy |" if with_rm else " |"),
        "|---|" + "---|" * len(shown) + ("---|" if with_rm else ""),
    ]
    for name, run in result["runs"].items():
        rm = (run.get("reward_model") or {}).get("held_out_pair_accuracy")
        cells = [f"{run[m]['reward']:+.3f}, {run[m]['rougeL']:.3f}" if m in run else "" for m in shown]
        if with_rm:
            cells.append("" if rm is None else f"{rm:.1%}")
        runs.append(f"| {name} | " + " | ".join(cells) + " |")
    accuracy = result.get("reward_model_accuracy")
    if accuracy:  # over the runs that trained a reward model
        per_split = ", ".join(f"split {s} {a:.1%}" for s, a in accuracy["per_split"].items())
        share = accuracy["between_split_share"]
        split_share = "" if share is None else f"; the split's share of the variance {share:.0%}"
        runs += ["", f"Reward model's held-out pair accuracy over {plural(accuracy['n'], 'run')}: "
                 f"{mean_sd(accuracy, '.1%', '.1%')} ({per_split}{split_share})."]  # fmt: skip
    return "\n".join([head, "", *lines, "", *runs, "", f"Command: `{result['command']}`", ""])


def int4_recipes_table(result: dict) -> str:
    """benchmarks/int4_recipes.py: 4-bit recipes on the tuned decoder's fused graph."""
    fp32 = result["fp32"]
    lines = [
        "| recipe | article perplexity (change) | headline perplexity (change) | file |",
        "|---|---|---|---|",
        f"| fp32 | {fp32['perplexity']:.2f} | {fp32['answer_perplexity']:.2f} | {fp32['bytes'] / 2**20:.0f} MiB |",
    ]
    for name, r in result["recipes"].items():
        bold = "**" if "(shipped)" in name else ""
        cells = [f"{r['perplexity']:.2f} ({r['perplexity_change']:+.1%})",
                 f"{bold}{r['answer_perplexity']:.2f} ({r['answer_perplexity_change']:+.1%}){bold}",
                 f"{r['bytes'] / 2**20:.0f} MiB"]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    head = (
        f"Device: {result['device']}; {result['date']}; perplexity on {result['texts']} held-out articles "
        f"({result['text_tokens']} tokens each) and on {result['answers']} held-out headlines given their chat "
        "prompts (answer tokens only), each form against the fp32 graph."
    )
    return "\n".join([head, "", *lines, "", f"Command: `{result['command']}`", ""])


def reward_variants_table(result: dict) -> str:
    """benchmarks/reward_variants.py: reward-model variants scored on the same held-out pairs."""
    held = result["held_out_pairs_decided_by"]
    terms = ", ".join(f"{k} {v}" for k, v in held["largest_term"].items())
    head = (
        f"Device: {result['device']}; {result['date']}; every variant scored on the same {held['pairs']} held-out "
        f"pairs. The reward term that moves most between a held-out pair's answers: {terms}; the terms that need "
        f"no reference headline order {held['ordered_by_reference_free_terms']:.0%} of the pairs as the whole "
        "reward does."
    )
    # Results from before --many_pairs have no second held-out set.
    many = [r["many_held_out_pairs"] for r in result["variants"] if "many_held_out_pairs" in r]
    articles = f"{result.get('many_rows', 1024):,}"  # results from before --many_rows sampled 1,024
    scored = {"held_out_pair_accuracy": "held-out pair accuracy: mean (per seed)"}
    if many:
        scored["many_held_out_pair_accuracy"] = f"{many[0]} held-out pairs of {articles} articles: mean (per seed)"
    lines = [" | ".join(["| variant", "training pairs", "reads", *scored.values(), "train loss", "held-out loss",
                         "train s |"]),
             "|---" * (6 + len(scored)) + "|"]  # fmt: skip

    def mean(r: dict, key: str) -> str:  # the mean over seeds, and their sd when there are several
        return f"**{r[key]:.1%}**" + (f" ± {r[key + '_sd']:.1%}" if r[key + "_sd"] is not None else "")

    def accuracy(r: dict, key: str) -> str:
        per = ", ".join(f"{run[key]:.1%} (seed {run['seed']})" for run in r["runs"])
        return f"{mean(r, key)} ({per})"

    for r in result["variants"]:
        reads = "answer, then prompt" if r["response_first"] else "prompt + answer, from the left"
        if r.get("reference_column"):  # the reference answer in the prompt's place
            reads = "answer, then reference" if r["response_first"] else "reference + answer, from the left"
        runs = r["runs"]
        losses = [
            f"{runs[0][k][-1]:.3f}" if runs[0][k] else "–" for k in ("train_loss_per_epoch", "val_loss_per_validation")
        ]
        seconds = "–" if runs[0]["train_s"] is None else runs[0]["train_s"]
        lines.append(" | ".join([f"| {r['description']}", str(r["train_pairs"]), f"{reads}, {r['max_length']}",
                                 *(accuracy(r, key) for key in scored), *losses, f"{seconds} |"]))  # fmt: skip
    head += " Losses and seconds are the first seed's."
    repeated = [r for r in result["variants"] if r.get("many_held_out_pairs_of_trained_articles")]
    if repeated:  # results from before the check hold no such count
        each = "; ".join(f"{r['description']} ({r['many_held_out_pairs_of_trained_articles']} dropped): "
                         f"{mean(r, 'many_unseen_held_out_pair_accuracy')}" for r in repeated)  # fmt: skip
        lines += ["", f"The BBC set repeats some articles word for word, so a few of the {many[0]} held-out pairs of "
                  f"{articles} articles are of an article the variant trained on. Without them: {each}."]  # fmt: skip
    if ens := result.get("ensemble"):
        of = " and ".join(f"“{r['description']}”" for r in result["variants"] if r["variant"] in ens["variants"])
        unseen = ens.get("many_unseen_held_out_pair_accuracy")
        without = f" ({unseen:.1%} without the pairs of articles a model trained on)" if repeated else ""
        lines += ["", f"All {ens['models']} models of {of} as one reward (the sum of their scores): "
                  f"**{ens['held_out_pair_accuracy']:.1%}** of the held-out pairs, "
                  f"**{ens['many_held_out_pair_accuracy']:.1%}** of the {many[0]} of {articles} articles"
                  f"{without}."]  # fmt: skip
    return with_command(head, lines + by_margin_table(result["variants"]), result)


def reward_seeds_table(result: dict) -> str:
    """benchmarks/reward_seeds.py: the reward model on each chain run's own held-out pairs."""
    runs = list(result["held_out_pairs"])
    splits = sorted({s for v in result["variants"] for s in v["accuracy"]["per_split"]}, key=int)
    pairs = ", ".join(f"{run} {result['train_pairs'][run]}/{result['held_out_pairs'][run]}" for run in runs)
    head = (
        f"Device: {result['device']}; {result['date']}; chain runs of `{result['chains']}` (training/held-out "
        f"pairs: {pairs}); each model trained with its run's seed and scored on its run's held-out pairs as PPO "
        "scores them; mean ± sample sd over the runs."
    )
    lines = ["| reward model | held-out pair accuracy | " + " | ".join(f"split {s}" for s in splits)
             + " | split's share of the variance | " + " | ".join(runs) + " |",
             "|---|---|" + "---|" * (len(splits) + 1 + len(runs))]  # fmt: skip
    for v in result["variants"]:
        a = v["accuracy"]
        per_run = {f"s{r['split']}-r{r['seed']}": r["held_out_pair_accuracy"] for r in v["runs"]}
        share = a["between_split_share"]
        cells = [f"**{a['mean']:.1%}** ± {a['sd']:.1%}", *(f"{a['per_split'][s]:.1%}" for s in splits),
                 "–" if share is None else f"{share:.0%}", *(f"{per_run[run]:.1%}" for run in runs)]  # fmt: skip
        lines.append(f"| {v['description']} | " + " | ".join(cells) + " |")
    return with_command(head, lines, result)


def by_margin_table(variants: list[dict]) -> list[str]:
    """Each variant's accuracy on the second held-out set by quarter of the pairs' reward margin
    (mean over its seeds): a model that had learned the reward ranks the wide pairs best."""
    scored = [r for r in variants if r.get("many_held_out_accuracy_by_margin")]
    if not scored:
        return []
    quarters = scored[0]["many_held_out_accuracy_by_margin"]
    cells = [f"margin {q['margin'][0]:.2f} to {q['margin'][1]:.2f} ({q['pairs']} pairs)" for q in quarters]
    title = f"Accuracy on the {scored[0]['many_held_out_pairs']} held-out pairs by quarter of their reward margin"
    lines = ["", f"{title}, mean over seeds:", "", "| variant | " + " | ".join(cells) + " |",
             "|---" * (1 + len(cells)) + "|"]  # fmt: skip
    for r in scored:
        accuracy = [f"{q['accuracy']:.1%}" for q in r["many_held_out_accuracy_by_margin"]]
        lines.append(f"| {r['description']} | " + " | ".join(accuracy) + " |")
    return lines


def stage_variant_table(result: dict) -> str:
    """benchmarks/stage_variants.py: a stage of the seeds grid's runs trained again with a setting
    changed, each side by the validation it kept."""
    head = (
        f"Device: {result['device']}; {result['date']}; the {result['stage'].upper()} stage as each run of the grid "
        f"ran it and with {', '.join(result['settings'])} ({result['variant']}), each by the validation "
        "it kept (the most reward from its 16 validation articles' greedy answers); the test articles are not used."
    )
    lines = ["| run | as run: step, reward, ROUGE-L | variant: step, reward, ROUGE-L | reward change | "
             "ROUGE-L change |", "|---|---|---|---|---|"]  # fmt: skip

    def kept(cell: dict) -> str:
        return f"{cell['step']}, {cell['reward']:+.3f}, {cell['rougeL']:.3f}"

    for name, run in result["runs"].items():
        a, v = run["as_run"]["kept"], run["variant"]["kept"]
        lines.append(f"| {name} | {kept(a)} | {kept(v)} | {v['reward'] - a['reward']:+.3f} | "
                     f"{v['rougeL'] - a['rougeL']:+.3f} |")  # fmt: skip
    summary = result["summary"]
    cells = [f"{summary[m][side]['mean']:{f}} ± {summary[m][side]['sd']:.3f}" for side in ("as_run", "variant")
             for m, f in (("reward", "+.3f"), ("rougeL", ".3f"))]  # fmt: skip
    change = [f"{summary[m]['change']['mean']:+.3f} ± {summary[m]['change']['sd']:.3f}" for m in ("reward", "rougeL")]
    lines.append(f"| mean ± sd | {cells[0]}, {cells[1]} | {cells[2]}, {cells[3]} | {change[0]} | {change[1]} |")
    return with_command(head, lines + training_reward_table(result), result)


def training_reward_table(result: dict) -> list[str]:
    """An RL stage's mean reward on its own sampled answers, first and last updates, per side."""
    runs = {name: run for name, run in result["runs"].items() if "training_reward" in run["as_run"]}
    if not runs:
        return []
    of = next(iter(runs.values()))["as_run"]["training_reward"]["of"]
    lines = ["", f"Reward of the answers each side sampled in training, mean over its first and last {of} batches "
             "(a batch of sampled answers: one update, unless num_iterations or ppo_epochs make it several):",
             "", "| run | as run: first, last | variant: first, last |", "|---|---|---|"]  # fmt: skip
    for name, run in runs.items():
        cells = [f"{t['first']:+.3f}, {t['last']:+.3f}"
                 for t in (run[side].get("training_reward") for side in ("as_run", "variant")) if t]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def align_trl_table(result: dict) -> str:
    """benchmarks/align_vs_trl.py: lightkit's DPO and GRPO against TRL's trainers on the same jobs."""
    lines = [
        "| job | side | s per optimizer step | peak RSS MiB | held-out reward | held-out ROUGE-L | words | "
        "speed vs TRL |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def score(job: str, side: str, key: str, fmt: str) -> str:
        spread = result[job].get("over_seeds", {}).get(side, {}).get(key)
        if spread is None:  # a one-seed result: the value itself
            return format(result[job][side][key], fmt)
        return f"{format(spread['mean'], fmt)} ± {spread['stdev']:.3f}"

    for job in ("dpo", "grpo"):
        if job not in result:
            continue
        for side in ("lightkit", "trl"):
            r = result[job][side]
            speed = f"**{result[job]['speedup']:.2f}x**" if side == "lightkit" else "1.00"
            cells = [f"{r['s_per_step']:.2f}", f"{r['peak_rss_mib']:.0f}", score(job, side, "held_out_reward", "+.3f"),
                     score(job, side, "held_out_rougeL", ".3f"), f"{r['held_out_words']:.1f}", speed]  # fmt: skip
            lines.append(f"| {job.upper()} | {side} | " + " | ".join(cells) + " |")
    notes = []
    for name in ("dpo", "grpo"):
        if name not in result or "speedup_spread" not in result[name]:
            continue  # results before the per-round spread and the split of a step
        r, s = result[name], result[name]["speedup_spread"]
        note = (
            f"{name.upper()}: per-round speed ratios {s['min']:.2f}x to {s['max']:.2f}x; whole training call "
            f"(loading, any precomputation, every step) {r['lightkit']['train_wall_s']:.0f} s against "
            f"{r['trl']['train_wall_s']:.0f} s ({r['speedup_train_wall']:.2f}x)"
        )
        if "tokens_per_s" in r["lightkit"]:
            note += f"; tokens/s {r['lightkit']['tokens_per_s']:.0f} against {r['trl']['tokens_per_s']:.0f}"
        if "generation_s_per_step" in r["lightkit"]:
            parts = ("generation", "rewards", "rest")
            split = {
                side: ", ".join(f"{part} {r[side][f'{part}_s_per_step']:.1f} s" for part in parts)
                + f" (generation under autocast {r[side]['autocast'].get('generation')})"
                for side in ("lightkit", "trl")
            }
            note += f"; a step: lightkit {split['lightkit']}, TRL {split['trl']}"
        notes.append(note + ".")
    lines += ["", *notes] if notes else []
    job = result["job"]
    ran = [j for j in ("dpo", "grpo") if j in result]
    steps = ", ".join(f"{j.upper()} {job[j]['steps_timed'] + job['warmup_steps_untimed']}" for j in ran)
    seeds = job.get("seeds", [job.get("seed", 0)])
    over = (
        f"medians over seeds {seeds}, held-out scores as mean ± sd over them"
        if len(seeds) > 1
        else f"one seed ({seeds[0]})"
    )
    head = (
        f"Device: {result['device']}; {result['date']}; versions {result['versions']}; {job['precision']}, "
        f"{job['warmup_steps_untimed']} untimed step(s) first; held-out scores on {job['eval_rows']} articles after "
        f"the same steps on both sides ({steps}); {over}."
    )
    return with_command(head, lines, result)


def llm_peers_table(result: dict) -> str:
    """benchmarks/llm_peers.py: the shipped LLM against optimum-onnx and onnxruntime-genai."""
    n = result.get("new_tokens", 32)
    first = next(iter(result["results"].values()))
    e2e = "e2e_ms_b1" in first  # results before end-to-end rows had none
    answers = "answer_perplexity" in first  # nor, before the int4 forms, headline perplexity
    lines = [
        "| side | size MiB | prefill ms, 128 tokens, b1 / b8 | decode ms/token, b1 / b8 | "
        + (f"end to end ms, {n} new tokens, b1 / b8 | " if e2e else "")
        + "perplexity, articles (change) | "
        + ("perplexity, held-out headlines (change) | " if answers else "")
        + "greedy: tokens before divergence / identical answers |",
        "|---|---|---|---|" + ("---|" if e2e else "") + "---|" + ("---|" if answers else "") + "---|",
    ]
    for name, r in result["results"].items():
        lines.append(
            f"| {name} | {r['bytes'] / 2**20:.0f} | {r['prefill_ms_b1']:.0f} / {r['prefill_ms_b8']:.0f} | "
            f"{r['decode_ms_per_token_b1']:.1f} / {r['decode_ms_per_token_b8']:.1f} | "
            + (f"{r['e2e_ms_b1']:.0f} / {r['e2e_ms_b8']:.0f} | " if e2e else "")
            + f"{r['perplexity']:.3f} ({100 * r['perplexity_change']:+.2f}%) | "
            + (f"{r['answer_perplexity']:.2f} ({100 * r['answer_perplexity_change']:+.1f}%) | " if answers else "")
            + f"{r['greedy_prefix_agreement']:.2f} / {r['greedy_identical']:.2f} |"
        )
    head = (
        f"Device: {result['device']}; {result['date']}; medians over {result['rounds']} interleaved rounds; "
        f"PyTorch fp32 perplexity {result['pytorch_fp32_perplexity']:.3f}"
        + (f" (articles), {result['pytorch_fp32_answer_perplexity']:.2f} (headlines)." if answers else ".")
    )
    return with_command(head, lines, result)


def refiner_table(result: dict) -> str:
    """benchmarks/refiner_vs_best_of_n.py: the refiner against best-of-N on one objective."""
    lines = [
        "| method | objective | gain over greedy | ROUGE-L | words | model calls | ms per prompt |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["summary"].items():
        lines.append(
            f"| {name} | {r['objective']:.2f} | {r['objective_gain_over_greedy']:+.2f} | {r['rougeL']:.3f} | "
            f"{r['words']:.1f} | {r['calls']:.1f} | {r['ms']:.0f} |"
        )
    head = (
        f"Device: {result['device']}; {result['date']}; {result['prompts']} prompts; objective: {result['objective']}."
    )
    return with_command(head, lines, result)


# Which table a result file gets: the first renderer whose test matches it.
def ship_table(result: dict) -> str:
    """A `lightkit ship` run's summary.json: every model and form with its metric, size and latency."""
    sizes, metric = result["batch_sizes"], result["primary_metric"]
    head = f"| model | form | size MiB | test {metric} | " + " | ".join(
        f"ms, batch {s} | vs PyTorch, batch {s}" for s in sizes
    )
    lines = [head + " |", "|" + "---|" * (4 + 2 * len(sizes))]
    for row in result["rows"]:
        cells = [row["model"], row["form"], "–" if row["mib"] is None else f"{row['mib']:.1f}",
                 "–" if row["metric"] is None else f"{100 * row['metric']:.1f}"]  # fmt: skip
        for s in sizes:
            latency, speedup = row["latency"][str(s)], row["speedup"][str(s)]
            cells += ["–" if latency is None else f"{latency:.2f}", "–" if speedup is None else f"{speedup:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    walls = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in result["stages_wall_s"].items())
    return with_command(f"Device: {result['device']}; {result['date']}.", [*lines, "", f"Stages: {walls}."], result)


def ship_chain_table(result: dict) -> str:
    """A decoder chain's summary.json (`lightkit ship`, pipeline: decoder): the models as
    align_table shows them, then the shipped artifacts with their generate stage's rewards."""
    models = {m["model"]: m for m in result["models"]}
    as_align = {
        **result,
        "models": models,
        "held_out_articles": result["held_out"],
        "reward": result["reward"],
        "stage_times_s": result["stages_wall_s"],
        "samples": [{"reference": s["reference"], **s["answers"]} for s in result["samples"]],
    }
    lines = [
        "| model | form | size MiB | parity gate | greedy agreement | decided steps "
        "| lightkit generate: reward, greedy | refined |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in result["artifacts"]:
        decided = a["greedy_decided_steps"]
        cells = [a["model"], a["form"], f"{a['mib']:.1f}", "passed" if a["passed"] else "FAILED",
                 f"{a['greedy_agreement']:.3f}" if a["greedy_agreement"] is not None else "–",
                 "–" if decided is None else f"{decided} of {a['greedy_steps']}",
                 *("–" if a[k] is None else f"{a[k]:+.3f}" for k in ("reward_greedy", "reward_refined"))]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    body, command = align_table(as_align).rsplit("\nCommand: ", 1)
    return "\n".join([body.rstrip("\n"), "", "Shipped artifacts:", "", *lines, "", f"Command: {command}"])


def serve_load_table(result: dict) -> str:
    """benchmarks/serve_load.py: lightkit serve under concurrent clients against lightkit generate."""

    def cell(d: dict, fmt: str) -> str:
        return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}–{fmt.format(d['max'])})"

    lines = [
        "| clients | serve tokens/s | lightkit generate tokens/s, same batch | serve / generate | p50 latency s | "
        "p99 latency s | failed | differing from generate at batch 1 | none of generate's answers | answers checked |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cells = [str(r["clients"]), cell(r["serve_tokens_per_s"], "{:.1f}"),
                 cell(r["generate_tokens_per_s_at_batch"], "{:.1f}"), f"{r['serve_over_generate']:.2f}x",
                 cell(r["p50_latency_s"], "{:.2f}"), cell(r["p99_latency_s"], "{:.2f}"), str(r["failed"]),
                 str(r["differing_from_batch_1"]), str(r["not_any_generate_answer"]),
                 str(r["answers_checked"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    settings = result["settings"]
    head = (
        f"Device: {result['device']}; {result['date']}. Median (min–max) over {settings['rounds']} interleaved "
        f"rounds. serve: {settings['serve']}. generate: {settings['generate']}."
    )
    # The other sides, one table each: the same server without joining, and the peer.
    sides = [("waves", f"Without joining: {settings.get('waves')}", "serve / waves",
              ("differing from generate at batch 1", "differing_from_batch_1")),
             ("peer", f"Peer: {settings.get('peer')}", "lightkit serve / peer",
              ("same answer as lightkit at batch 1", "same_answer_as_lightkit_batch_1"))]  # fmt: skip
    for key, title, ratio_name, (extra_name, extra) in sides:
        shown = [r for r in result["rows"] if key in r]
        if not shown:
            continue
        lines += ["", f"{title}.", "",
                  f"| clients | {key} tokens/s | {ratio_name} | {key} p50 latency s | {key} p99 latency s | failed "
                  f"| {extra_name} |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in shown:
            side = r[key]
            ratio = r["serve_tokens_per_s"]["median"] / side["tokens_per_s"]["median"]
            lines.append(f"| {r['clients']} | {cell(side['tokens_per_s'], '{:.1f}')} | {ratio:.2f}x | "
                         f"{cell(side['p50_latency_s'], '{:.2f}')} | {cell(side['p99_latency_s'], '{:.2f}')} | "
                         f"{side['failed']} | {side.get(extra, '–')} |")  # fmt: skip
    return with_command(head, lines, result)


RENDERERS: list[tuple[Callable[[dict], bool], Callable[[dict], str]]] = [
    (lambda r: r.get("kind") == "serve-load", serve_load_table),
    (lambda r: r.get("kind") == "ship", ship_table),
    (lambda r: r.get("kind") == "ship-decoder", ship_chain_table),
    (lambda r: r.get("kind") == "reward-seeds", reward_seeds_table),
    (lambda r: "rows" in r and "speedup_vs_pytorch" in r["rows"][0], inference_table),
    (lambda r: "encoder" in r, gpu_inference_tables),
    (lambda r: "hf_trainer" in r, train_table),
    (lambda r: "schemes" in r, embedding_table),
    (lambda r: "zero_shot" in r, sft_table),
    (lambda r: "models" in r and "held_out_articles" in r, align_table),
    (lambda r: "recipes" in r and "fp32" in r, int4_recipes_table),
    (lambda r: "summary" in r and "splits" in r and "seeds" in r, align_seeds_table),
    (lambda r: "job" in r and ("dpo" in r or "grpo" in r), align_trl_table),  # one job or both
    (lambda r: "variants" in r and "held_out_pairs_decided_by" in r, reward_variants_table),
    (lambda r: "stage" in r and "variant" in r and "settings" in r, stage_variant_table),
    (lambda r: "trl" in r, trl_table),
    (lambda r: "retention" in r, kd_table),
    (lambda r: "pytorch_fp32_perplexity" in r, llm_peers_table),
    (lambda r: "objective_gain_over_greedy" in next(iter(r.get("summary", {}).values()), {}), refiner_table),
]


def render(result: dict) -> str | None:
    """The Markdown of one result file (table, artifacts, command, targets); None for a kind
    without a table."""
    table = next((table for matches, table in RENDERERS if matches(result)), None)
    if table is None:
        return None
    return table(result) + ("\n".join(["", *targets_lines(result)]) if "targets" in result else "")


def main() -> None:
    for name in sys.argv[1:]:
        path = Path(name)
        text = render(json.loads(path.read_text()))
        if text is None:
            continue
        path.with_suffix(".md").write_text(text)
        print(f"wrote {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
