# The two commands of the README: `make demo` and `make test`. Each creates .venv and installs the package when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test tiny-model clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/magicprop demo --out outputs/demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# Rebuild the embedded tiny model from scratch on CPU (about 30 minutes on 2 cores): tiny VAE + CLIP tower, 400
# synthetic training clips, PropDPM training, then the export is copied into the package.
TINY := outputs/tiny-build
tiny-model: $(STAMP)
	$(BIN)/python -m magicprop.training.autoencoder --out $(TINY) --steps 4000 --lr 5e-4
	$(BIN)/magicprop synth --out $(TINY)/data --seed 0 --count 400 --frames 16 --size 64 64 --edit global
	$(BIN)/magicprop train --config tiny-synthetic --data $(TINY)/data --output-dir $(TINY)/run \
		--vae $(TINY)/vae --image-encoder $(TINY)/image_encoder --max-steps 1500
	rm -rf src/magicprop/weights/tiny && cp -r $(TINY)/run/final src/magicprop/weights/tiny

clean:
	rm -rf $(VENV) outputs .pytest_cache
