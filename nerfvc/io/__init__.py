"""Video input/output (PyAV): probing, decoding with true timestamps, H.264 mp4 writing."""

from nerfvc.io.video import (
    VideoInfo,
    VideoWriter,
    count_frames,
    probe,
    read_frame_range,
    read_frames,
    write_video,
)

__all__ = [
    "VideoInfo",
    "VideoWriter",
    "count_frames",
    "probe",
    "read_frame_range",
    "read_frames",
    "write_video",
]
