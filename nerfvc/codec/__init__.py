"""Feature codec: quantize, predict, range-code and frame per-frame features into the ``.nvc`` bitstream.

See docs/bitstream.md for the format.
"""

from nerfvc.codec.decoder import DecodedFrame, LossStats, StreamDecoder, StreamReport, decode_stream
from nerfvc.codec.encoder import StreamEncoder, choose_step_index, encode_stream
from nerfvc.codec.entropy import code_rate_params, estimate_bits, step_scales
from nerfvc.codec.fit import fit_codec, write_codec_tables
from nerfvc.codec.framing import StreamHeader
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
