"""The weight-free family of stage II: `flow`, the edited keyframe warped through keyframe-anchored coordinate maps
(EbSynth-style), with guided patch synthesis for what it cannot explain.

- `propagator`: `AnchoredFlowPropagator` (`flow`), one or several keyframes, streamed and resumable;
- `maps`: the anchored maps (chained frame-to-frame flow, corrected against the source keyframe) and their validity;
- `appearance`: the keyframe pair's local affine model, which carries the source's change into the edit;
- `fill`: what fills the pixels no keyframe explains (patch synthesis or a colour transfer) and its guides;
- `patches` (with the numba `kernels`): guided patch synthesis after Jamriska et al. 2019;
- `keyframe_warp`: the keyframe warped to each frame, for PropDPM's anchored conditioning and `hybrid`.
"""
