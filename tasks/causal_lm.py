"""Causal language modelling: pretraining, instruction tuning and generation.

    lightkit fit --config configs/clm.yaml
    lightkit predict --config configs/clm.yaml --ckpt_path ... --data.predict_file prompts.txt

Batches come from `CausalLMDataModule` (packed text) or `InstructionDataModule` (prompt/response,
loss on the response only). Logged per stage: loss, next-token accuracy and perplexity. `predict`
generates a continuation for each prompt (greedy, or sampling with temperature / top-k / top-p)
and writes one JSON line per prompt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torchmetrics import MetricCollection
from torchmetrics.text.rouge import ROUGEScore
from transformers import AutoModelForCausalLM, PreTrainedModel

from lightkit.io.atomic import atomic_write_text
from lightkit.metrics.lm import TokenMetrics
from lightkit.objectives.lm_loss import chunked_lm_loss
from lightkit.training.task import BaseTask, StepOutput


class CausalLMTask(BaseTask):
    """A decoder (e.g. a small Llama from `model_config`, or a pretrained folder) trained on next tokens.

    Args:
        prompt_template: how prompts are formatted; linked from the DataModule and saved with the
            model (`lightkit.json`) so generation formats prompts as training did.
        max_new_tokens: tokens generated per prompt by `predict`.
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature.
        top_k: sample among the k most likely tokens (0: no limit).
        top_p: nucleus sampling threshold (1.0: no limit).
        test_generation: on `test`, also answer each test prompt that has a reference answer
            (instruction data) with the generation settings above, and score the answers against
            the references: ROUGE-1/2/L F-measure (torchmetrics) and the mean answer length in
            words, logged as `test_rouge1`, ... `test_words`; `test_generations.jsonl` holds every
            prompt, reference and answer.
        chunked_loss: take the loss from the decoder's hidden states at the labelled positions
            with torch's chunked `linear_cross_entropy` (`lightkit.objectives.lm_loss`), so the (B, T, V)
            logits are never built: less memory with a large vocabulary, and no output-layer work
            on prompt tokens in instruction tuning. Llama-family output layers only.
        **kwargs: pretrained / model_config, learning rate, ... (see BaseTask).
    """

    auto_model = AutoModelForCausalLM
    peft_task_type = "CAUSAL_LM"
    primary_metric = "perplexity"
    primary_mode = "min"
    export_kind = "decoder"
    serving = "tokens"
    parity_batches = 4  # logits span the vocabulary: a few batches already hold many positions

    def logits_axes(self) -> list[str | int]:
        return ["batch", "sequence", self.model.config.vocab_size]

    def __init__(
        self,
        prompt_template: str | None = None,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        test_generation: bool = False,
        chunked_loss: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if test_generation:
            self.test_rouge = ROUGEScore(rouge_keys=("rouge1", "rouge2", "rougeL"))
        self.generated: list[dict[str, str]] = []

    def build_model(self) -> PreTrainedModel:
        model = super().build_model()
        # transformers picks the loss by class name, and `GPT2LMHeadModel` matches none: each
        # forward then calls `logger.warning_once` before falling back to the causal-LM loss.
        # Under torch.compile that call is a graph break on every step (dynamo does not trace
        # logging), splitting the forward in two graphs. Naming the loss it falls back to
        # removes the break and leaves the loss as it was.
        if getattr(model, "loss_type", None) is None:
            model.loss_type = "ForCausalLM"
        return model

    def model_overrides(self) -> dict[str, Any]:
        if self.tokenizer is not None and self.hparams.model_config is not None:
            return {"bos_token_id": self.tokenizer.bos_token_id, "eos_token_id": self.tokenizer.eos_token_id}
        return {}

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"tokens": TokenMetrics()})

    def step(self, batch: dict[str, Any]) -> StepOutput:
        if self.hparams.get("chunked_loss") and self._stand_in is None:
            chunked = chunked_lm_loss(self.model, self.model_inputs(batch), batch["labels"])
            if not self.wants_metrics():
                return StepOutput(chunked.loss, None, None)
            nll_sum = chunked.loss.detach() * chunked.target.numel()
            return StepOutput(chunked.loss, chunked.predictions(), chunked.target, {"nll_sum": nll_sum})
        out = self.run_model(batch, labels=batch["labels"])  # logits (B, T, V)
        if not self.wants_metrics():
            return StepOutput(out.loss, None, None, output=out)  # no (B, T, V) gather, no host sync per step
        target = batch["labels"][:, 1:]  # the model predicts token t+1 at position t
        labelled = target != -100
        preds = out.logits.detach()[:, :-1][labelled].argmax(-1)
        return StepOutput(
            out.loss, preds, target[labelled], {"nll_sum": out.loss.detach() * labelled.sum()}, output=out
        )

    # -- test-time generation ------------------------------------------------------------------
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        out = super().test_step(batch, batch_idx)
        if self.hparams.get("test_generation") and "references" in batch:
            new = self.generate(batch["gen_input_ids"], batch["gen_attention_mask"])
            answers = [a.strip() for a in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
            self.test_rouge.update(answers, batch["references"])
            self.generated += [
                {"prompt": p, "reference": r, "answer": a}
                for p, r, a in zip(batch["gen_prompts"], batch["references"], answers)
            ]
        return out

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if not self.hparams.get("test_generation"):
            return
        scores = self.test_rouge.compute()
        self.test_rouge.reset()
        words = sum(len(g["answer"].split()) for g in self.generated) / max(len(self.generated), 1)
        values = {f"test_{k}": scores[f"{k}_fmeasure"] for k in ("rouge1", "rouge2", "rougeL")}
        self.log_dict({**values, "test_words": torch.tensor(float(words))})
        if self.trainer.is_global_zero and self.generated:
            path = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "test_generations.jsonl"
            atomic_write_text(path, "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in self.generated))
            samples = "\n".join(
                f"  reference: {g['reference']}\n  answer:    {g['answer']}" for g in self.generated[:3]
            )
            summary = ", ".join(f"{k} {float(v):.4f}" for k, v in values.items())
            head = f"test generation ({len(self.generated)} answers): {summary}, {words:.1f} words"
            print(f"\n{head}\n{samples}\nwritten to {path}")
        self.generated = []

    def saved_settings(self) -> dict[str, Any]:
        return {"prompt_template": self.hparams.prompt_template or "{prompt}"}

    # -- generation ----------------------------------------------------------------------------
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """New token ids (B, <= max_new_tokens) after left-padded prompts."""
        h = self.hparams
        sampling = {"temperature": h.temperature, "top_k": h.top_k or None, "top_p": h.top_p} if h.do_sample else {}
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=h.max_new_tokens,
            do_sample=h.do_sample,
            pad_token_id=self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            **sampling,
        )
        return out[:, input_ids.size(1) :]

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, str]]:
        new = self.generate(batch["input_ids"], batch["attention_mask"])
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [{"prompt": p, "completion": c} for p, c in zip(batch["prompt"], texts)]

    def prediction_lines(self, prediction: list[dict[str, str]]) -> Iterable[str]:
        for row in prediction:
            yield json.dumps(row, ensure_ascii=False) + "\n"
