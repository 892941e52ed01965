PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null

# the demo serves the operator page in-process: the hmi extra
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[hmi]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/linevision run

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check linevision tests
	$(BIN)/ruff format --check linevision tests

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy --strict linevision

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# ---- models: re-train the shipped models from seeds (needs the train extra, 2 CPU cores) ----
MODEL_DATA ?= build/model-data
TRAIN_BIN := $(BIN)/linevision train

.PHONY: models models-pole-piece

$(VENV)/.installed-train: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[train]'
	touch $@

models: models-pole-piece models-seal-edge models-six-view models-blue-film

# $(call synth_sets,STATION,DIR N SEED DIR N SEED ...): the data sets, two processes at once
synth_sets = printf '%s %s %s\n' $(2) | xargs -P 2 -n 3 sh -c \
	'$(BIN)/linevision synth --station $(1) --out "$$1" --n "$$2" --seed "$$3"' sh

# pole_piece (seed 002): ResNet18 + GSConv + MSE, s2d stem, INT8 when within 0.5 points;
# 10 epochs (~13 min), at most 16 minutes on a slower machine
models-pole-piece: $(VENV)/.installed-train
	$(call synth_sets,pole_piece,$(POLE_PIECE_DATA)/train 800 0 $(POLE_PIECE_DATA)/val 100 1 \
		$(POLE_PIECE_DATA)/test 200 2)
	$(TRAIN_BIN) --station pole_piece --data $(POLE_PIECE_DATA)/train --out models/pole_piece \
		--epochs 10 --minutes 16 --seed 0 -- --val $(POLE_PIECE_DATA)/val \
		--test $(POLE_PIECE_DATA)/test --arch resnet18_gsconv_mse --stem s2d --threads 2 \
		--no-fp32-copy

# pole_piece, the seed's ResNet18 + GSConv + MSE as shipped (36 min, 1 thread; macro F1 0.996
# on the test set) and the ablation rows (ResNet18, + GSConv, + MSE, + GSConv + MSE, 15 min
# each); docs/models.md; writes build/models/
POLE_PIECE_DATA := $(MODEL_DATA)/pole_piece
POLE_PIECE_RESNET := --seed 0 -- --val $(POLE_PIECE_DATA)/val --test $(POLE_PIECE_DATA)/test \
	--stem s2d --threads 1
POLE_PIECE_ABLATION := resnet18 resnet18_gsconv resnet18_mse resnet18_gsconv_mse

.PHONY: pole-piece-resnet
pole-piece-resnet: $(VENV)/.installed-train
	$(BIN)/linevision synth --station pole_piece --out $(POLE_PIECE_DATA)/train --n 800 --seed 0
	$(BIN)/linevision synth --station pole_piece --out $(POLE_PIECE_DATA)/val --n 100 --seed 1
	$(BIN)/linevision synth --station pole_piece --out $(POLE_PIECE_DATA)/test --n 200 --seed 2
	$(TRAIN_BIN) --station pole_piece --data $(POLE_PIECE_DATA)/train \
		--out build/models/pp_gsconv_mse --epochs 30 --minutes 36 $(POLE_PIECE_RESNET) \
		--arch resnet18_gsconv_mse
	for arch in $(POLE_PIECE_ABLATION); do \
		$(TRAIN_BIN) --station pole_piece --data $(POLE_PIECE_DATA)/train \
			--out build/models/pp15_$$arch --epochs 30 --minutes 15 $(POLE_PIECE_RESNET) \
			--arch $$arch || exit 1; \
	done

# seal_edge (seed 001) and six_view (seed 000): pretrained EfficientNet-Lite0 stem, frozen;
# comparison heads trained on generated data; docs/models.md
.PHONY: models-seal-edge models-six-view
models-seal-edge: $(VENV)/.installed-train
	$(call synth_sets,seal_edge,$(MODEL_DATA)/seal/train 3000 1 $(MODEL_DATA)/seal/val 1000 2 \
		$(MODEL_DATA)/seal/test 1000 3)
	$(BIN)/python -m linevision.train.seal_edge --data $(MODEL_DATA)/seal/train \
		--val $(MODEL_DATA)/seal/val --test $(MODEL_DATA)/seal/test --out models/seal_edge \
		--epochs 6 --minutes 7

SIX_TRAIN := $(foreach s,$(shell seq 101 139),$(MODEL_DATA)/six/train_$(s))
SIX_VAL := $(foreach s,$(shell seq 201 204),$(MODEL_DATA)/six/val_$(s))
SIX_TEST := $(foreach s,$(shell seq 301 308),$(MODEL_DATA)/six/test_$(s))
models-six-view: $(VENV)/.installed-train
	printf '%s\n' $(SIX_TRAIN) $(SIX_VAL) $(SIX_TEST) | xargs -P 2 -n 1 sh -c \
		'$(BIN)/linevision synth --station six_view --out "$$1" --n 100 --seed "$${1##*_}"' sh
	$(BIN)/python -m linevision.train.six_view --data $(SIX_TRAIN) --val $(SIX_VAL) \
		--test $(SIX_TEST) --out models/six_view --epochs 40 --minutes 16 --lr 3e-3 \
		--cache $(MODEL_DATA)/six/cache

# blue_film (seeds 003 + 004): screen + distilled anomaly graph on generated tiles; docs/models.md
.PHONY: models-blue-film
models-blue-film: $(VENV)/.installed-train
	$(BIN)/python -m linevision.train.blue_film --out models/blue_film --seed 0 --minutes 6.5
	$(BIN)/linevision synth --station blue_film --out $(MODEL_DATA)/film_seg/train --n 400 \
		--seed 3 --ng-fraction 0.75 --width 1024 --height 1024
	$(BIN)/linevision synth --station blue_film --out $(MODEL_DATA)/film_seg/val --n 40 \
		--seed 8100 --width 2048 --height 2048
	$(BIN)/python -m linevision.train.film_segment --data $(MODEL_DATA)/film_seg/train \
		--out build/models/blue_film_seg --base models/blue_film --val $(MODEL_DATA)/film_seg/val \
		--minutes 8 --seed 0 --threads 1
	$(BIN)/python -m linevision.train.film_segment --out models/blue_film \
		--adopt build/models/blue_film_seg
	$(BIN)/python -m linevision.train.blue_film_eval --model models/blue_film --seed 8000 \
		--tiles 60 --frames 16 --out artifacts/blue_film_eval.json
