"""``nerfvc send`` / ``nerfvc receive`` are registered and fail with one-line errors on bad input."""

from __future__ import annotations

import pytest

from nerfvc.cli import build_parser, main


def test_send_and_receive_are_registered():
    parser = build_parser()
    args = parser.parse_args(["receive", "--model", "M", "--listen", "127.0.0.1:9000", "--size", "128"])
    assert args.command == "receive" and args.size == 128
    args = parser.parse_args(
        [
            "send",
            "--model",
            "M",
            "--video",
            "v.mp4",
            "--to",
            "http://127.0.0.1:9000",
            "--token",
            "T",
            "--kbps",
            "3",
        ]
    )
    assert args.command == "send" and args.kbps == 3 and args.pack == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["send", "--model", "M", "--to", "http://x", "--token", "T"])  # no source


@pytest.mark.parametrize(
    "argv",
    [
        ["receive", "--model", "/nonexistent-model", "--listen", "127.0.0.1:0"],
        ["receive", "--model", "/nonexistent-model", "--listen", "nonsense"],
        ["send", "--model", "/nonexistent-model", "--video", "x.mp4", "--to", "ftp://x", "--token", "T"],
        [
            "send",
            "--model",
            "/nonexistent",
            "--video",
            "x.mp4",
            "--to",
            "http://127.0.0.1:1",
            "--token",
            "T",
            "--pack",
            "0",
        ],
    ],
)
def test_bad_input_is_a_one_line_error(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nerfvc {argv[0]}: error:") and "\n" not in err
