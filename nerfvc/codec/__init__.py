"""Feature codec: quantize, predict, range-code and frame per-frame features into the ``.nvc`` bitstream.

See docs/bitstream.md for the format.
"""

from nerfvc.codec.bitstream import (
    DecodedFrame,
    LossStats,
    StreamDecoder,
    StreamEncoder,
    StreamHeader,
    StreamReport,
    choose_step_index,
    decode_stream,
    encode_stream,
)
from nerfvc.codec.entropy import code_rate_params, estimate_bits, step_scales
from nerfvc.codec.fit import fit_codec, write_codec_tables
from nerfvc.codec.tables import CODEC_FILE, CodecTables

__all__ = [
    "CODEC_FILE",
    "CodecTables",
    "DecodedFrame",
    "LossStats",
    "StreamDecoder",
    "StreamEncoder",
    "StreamHeader",
    "StreamReport",
    "choose_step_index",
    "code_rate_params",
    "decode_stream",
    "encode_stream",
    "estimate_bits",
    "fit_codec",
    "step_scales",
    "write_codec_tables",
]
