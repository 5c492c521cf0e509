"""Clips in and out: a lazy clip (`clip.Frames`: frames decoded when read, views for slices and sizes), streaming
readers (`reading`), images and masks (`images`), frames in memory (`frames`: resizing, working sizes, comparison
panels) and atomic writers (`writing`). Everything public is importable from `magicprop.video`."""

from .clip import Frames, clip_digest
from .frames import grid, resize_frames, side_by_side, working_size
from .images import fit_image, load_image, load_mask
from .reading import DEFAULT_FPS, IMAGE_SUFFIXES, VideoInfo, VideoReader, open_video, probe, read_video
from .writing import VideoWriter, save_image, write_video

__all__ = [
    "DEFAULT_FPS", "Frames", "IMAGE_SUFFIXES", "VideoInfo", "VideoReader", "VideoWriter", "clip_digest", "fit_image", "grid",
    "load_image", "load_mask", "open_video", "probe", "read_video", "resize_frames", "save_image", "side_by_side",
    "working_size", "write_video",
]  # fmt: skip
