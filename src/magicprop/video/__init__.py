"""Clips in and out: streaming readers (`reading`), frames in memory (`frames`: resizing, comparison panels) and
atomic writers (`writing`). Everything public is importable from `magicprop.video`."""

from .frames import grid, resize_frames, side_by_side
from .reading import DEFAULT_FPS, IMAGE_SUFFIXES, VideoInfo, VideoReader, fit_image, load_image, load_mask, open_video, probe, read_video, working_size
from .writing import VideoWriter, save_image, write_video

__all__ = [
    "DEFAULT_FPS", "IMAGE_SUFFIXES", "VideoInfo", "VideoReader", "VideoWriter", "fit_image", "grid", "load_image", "load_mask", "open_video", "probe",
    "read_video", "resize_frames", "save_image", "side_by_side", "working_size", "write_video",
]  # fmt: skip
