PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
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

models: models-pole-piece

# pole_piece (seed 002): ResNet18 + GSConv + MSE on generated crops; docs/models.md
models-pole-piece: $(VENV)/.installed-train
	$(BIN)/linevision synth --station pole_piece --out $(MODEL_DATA)/pole_piece/train --n 800 --seed 0
	$(BIN)/linevision synth --station pole_piece --out $(MODEL_DATA)/pole_piece/val --n 100 --seed 1
	$(BIN)/linevision synth --station pole_piece --out $(MODEL_DATA)/pole_piece/test --n 200 --seed 2
	$(TRAIN_BIN) --station pole_piece --data $(MODEL_DATA)/pole_piece/train --out models/pole_piece \
		--epochs 3 --minutes 10 --seed 0 -- --val $(MODEL_DATA)/pole_piece/val \
		--test $(MODEL_DATA)/pole_piece/test --arch resnet18_gsconv_mse --threads 1 --coarse-size 160

# seal_edge / six_view: add models-seal-edge and models-six-view targets below and list them
# in the `models:` line above.

# blue_film (seeds 003 + 004): screen + distilled anomaly graph on generated tiles; docs/models.md
.PHONY: models-blue-film
models-blue-film: $(VENV)/.installed-train
	$(BIN)/python -m linevision.train.blue_film --out models/blue_film --seed 0 --minutes 6.5
	$(BIN)/python -m linevision.train.blue_film_eval --model models/blue_film --seed 8000 \
		--tiles 60 --frames 16 --out artifacts/blue_film_eval.json
