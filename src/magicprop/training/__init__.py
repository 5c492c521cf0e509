"""Training PropDPM (paper, section 3.3.3): recipes, the triplet data, the latent cache and the accelerate loop.

    recipes.py     TrainRecipe and the named recipes (sd15-256, tiny-synthetic)
    sources.py     where clips come from: folders, manifests, WebDataset shards, synth clips
    data.py        the triplet dataset (frames + depth), its order and batches
    precompute.py  the latent cache (depth, VAE posteriors, CLIP tokens) and its dataset
    components.py  PropDPM from SD 1.5 or from scratch, the frozen VAE and CLIP
    loop.py        the training loop;  checkpoint.py  checkpoints and the final export;  logs.py  the log and its plot
    autoencoder.py the tiny VAE and image tower of the embedded tiny model

Import from the submodules (`from magicprop.training.loop import train`): this file imports nothing, so that reading a
recipe (and `magicprop --help`) does not load diffusers.
"""
