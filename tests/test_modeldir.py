"""Malformed ``model.json`` / ``nerf.json``: the project's one-line error, never a traceback or a hang."""

from __future__ import annotations

import json

import pytest

from nerfvc.cli import main
from nerfvc.errors import InputError, ModelMismatchError
from nerfvc.modeldir import MANIFEST, finalize_model_dir, model_torso_dims, read_model_manifest


@pytest.fixture
def model(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "nerf.safetensors").write_bytes(b"weights")
    finalize_model_dir(d)
    return d


def _edit(model, change):
    m = json.loads((model / MANIFEST).read_text())
    change(m)
    (model / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(files=[]),
        lambda m: m.update(files="nerf.safetensors"),
        lambda m: m.pop("files"),
        lambda m: m.pop("fingerprint"),
        lambda m: m.update(fingerprint=12),
        lambda m: m["files"].update({"../../../../dev/zero": "0" * 64}),
        lambda m: m["files"].update({"/dev/zero": "0" * 64}),
        lambda m: m["files"].update({"sub/../../x": "0" * 64}),
        lambda m: m["files"].update({"..": "0" * 64}),
        lambda m: m["files"].update({"a\nb": "0" * 64}),
        lambda m: m["files"].update({"nerf.safetensors": 5}),
    ],
)
@pytest.mark.parametrize("verify", [True, False])
def test_malformed_manifest_is_a_clean_error(model, change, verify):
    _edit(model, change)
    with pytest.raises(InputError, match="malformed") as e:
        read_model_manifest(model, verify=verify)
    assert "\n" not in str(e.value)


def test_manifest_not_an_object(model):
    (model / MANIFEST).write_text("[1, 2]")
    with pytest.raises(InputError, match="not a JSON object"):
        read_model_manifest(model)


def test_listed_file_must_be_a_regular_file(model):
    (model / "nerf.safetensors").unlink()
    (model / "nerf.safetensors").symlink_to("/dev/zero")  # would hash forever
    with pytest.raises(ModelMismatchError, match="not a regular file"):
        read_model_manifest(model)


def test_malformed_nerf_json(model):
    assert model_torso_dims(model) == 0
    for text in ("[]", '{"model": []}', '{"model": {"torso_dims": "x"}}'):
        (model / "nerf.json").write_text(text)
        with pytest.raises(InputError, match="malformed"):
            model_torso_dims(model)


def test_cli_one_line(model, tmp_path, capsys):
    _edit(model, lambda m: m.update(files=[]))
    (tmp_path / "s.nvc").write_bytes(b"NVCF")
    assert (
        main(["decode", str(tmp_path / "s.nvc"), "--model", str(model), "-o", str(tmp_path / "o.npz")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("nerfvc decode: error:") and "malformed" in err and "\n" not in err
