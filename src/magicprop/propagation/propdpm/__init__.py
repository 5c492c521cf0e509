"""The learned family of stage II: PropDPM (the paper) and `hybrid`.

- `propagators`: `PropDPMPropagator` (`propdpm`) and `HybridPropagator` (`hybrid`: PropDPM plus a fusion step);
- `sampling`: the autoregressive sampling loop (`propagate_latents`, `decode_steps`), with its step store;
- `fusion`: what `hybrid` does after each frame (the anchored warp where the keyframe explains the frame).

`sampling` loads torch: import it from its module.
"""
