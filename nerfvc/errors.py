"""Errors that the CLI turns into a one-line message and a non-zero exit code.

Exit codes: 0 success, 2 error (nothing written), 3 partial success (output written, but part of it is
concealment, e.g. ``nerfvc decode`` of a damaged stream), 130 interrupted (rerun to resume).
"""

EXIT_PARTIAL = 3


class NerfvcError(Exception):
    """Base class for every user-facing error (bad input, missing files, wrong model...)."""

    exit_code = 2


class InputError(NerfvcError):
    """The input (video, dataset, stream, model) is missing, unreadable or of the wrong kind."""


class FaceError(NerfvcError):
    """Face tracking failed: no face, several faces, or the face is lost for too long."""


class BitstreamError(NerfvcError):
    """A bitstream is truncated, corrupt, of an unknown version or made for another model."""


class ModelMismatchError(NerfvcError):
    """A model, checkpoint or dataset does not match what it is used with."""
