"""Sender-side face analysis: face mesh, person-specific linear morphable model, tracker, segmentation,
and the ``prepare`` / ``inspect`` commands. See docs/face.md."""
