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
    assert args.command == "send" and args.kbps == 3 and args.pack == 1 and not args.guard
    send = ["send", "--model", "M", "--video", "v.mp4", "--to", "http://x", "--token", "T"]
    assert parser.parse_args([*send, "--guard"]).guard
    with pytest.raises(SystemExit):
        parser.parse_args(["send", "--model", "M", "--to", "http://x", "--token", "T"])  # no source


@pytest.mark.parametrize(
    "argv",
    [
        ["receive", "--model", "/nonexistent-model", "--listen", "127.0.0.1:0"],
        ["receive", "--model", "/nonexistent-model", "--listen", "nonsense"],
        ["receive", "--model", "/nonexistent-model", "--size", "8"],
        ["receive", "--model", "/nonexistent-model", "--size", "4096"],
        ["receive", "--model", "/nonexistent-model", "--token", "T", "--view-token", "T"],
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


@pytest.mark.parametrize(
    ("extra", "what"),
    [
        (["--size", "8"], "--size"),
        (["--size", "4096"], "--size"),
        (["--token", "T", "--view-token", "T"], "differ"),
    ],
)
def test_receive_options_are_checked_before_anything_starts(extra, what, capsys):
    assert main(["receive", "--model", "/nonexistent-model", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert what in err and "\n" not in err
