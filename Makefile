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

# Rebuild the embedded tiny model from scratch on CPU (about an hour on 2 cores, in an empty outputs/tiny-build):
# tiny VAE + CLIP tower, 400 synthetic training clips, PropDPM conditioned on the keyframe warped through its anchored
# maps (the arm of the README's ablation that drifts least), then the export is copied into the package. See "The
# embedded tiny model" in the README.
TINY := outputs/tiny-build
tiny-model: $(STAMP)
	$(BIN)/python -m magicprop.training.autoencoder --out $(TINY) --steps 4000 --lr 5e-4
	$(BIN)/magicprop synth --out $(TINY)/data --seed 0 --count 400 --frames 16 --size 64 64 --edit global
	echo '{"anchored_reference": true}' > $(TINY)/anchored.json
	$(BIN)/magicprop train --config tiny-synthetic --recipe $(TINY)/anchored.json --data $(TINY)/data \
		--output-dir $(TINY)/run-anchored --vae $(TINY)/vae --image-encoder $(TINY)/image_encoder --max-steps 4500
	rm -rf src/magicprop/weights/tiny && cp -r $(TINY)/run-anchored/final src/magicprop/weights/tiny

clean:
	rm -rf $(VENV) outputs .pytest_cache
