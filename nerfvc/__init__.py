"""nerfvc: ultra-low-bitrate portrait video conferencing with per-person neural radiance fields."""

__version__ = "0.1.0"
