"""The readers of IDX files, CIFAR batches and safetensors checkpoints on truncated and
bit-flipped input: every case loads valid data or raises a UserError/ValueError with a
one-line message; nothing else escapes, and a header that promises more data than the file
holds is refused before anything of that size is allocated."""

import gzip
import json
import pickle
import random
import struct

import numpy as np
import pytest
from safetensors.torch import save as st_save

from dietsnn import build_ann, save_model
from dietsnn.checkpoint import load_model, read_config
from dietsnn.data import DATASETS, cifar, read_idx
from dietsnn.data.idx import load_idx_dataset
from dietsnn.errors import UserError

RNG = random.Random(14)


def mutations(raw: bytes, flips: int, truncations: int, hot: int | None = None):
    """Truncations at spread positions, then single-bit flips (half of them in the first `hot`
    bytes, where the headers are), seeded."""
    n = len(raw)
    for k in sorted({0, 1, n - 1, *(RNG.randrange(n) for _ in range(truncations))}):
        yield f"truncated at {k}", raw[:k]
    for _ in range(flips):
        limit = hot if hot and RNG.random() < 0.5 else n
        pos, bit = RNG.randrange(min(limit, n)), 1 << RNG.randrange(8)
        b = bytearray(raw)
        b[pos] ^= bit
        yield f"bit {bit} flipped at {pos}", bytes(b)


def must_load_or_refuse(fn, case: str):
    try:
        return fn()
    except (UserError, ValueError) as e:
        msg = str(e)
        assert msg and "\n" not in msg, (case, msg)
        return None


def idx_payload(n=6, size=5) -> bytes:
    imgs = np.arange(n * size * size, dtype=np.uint8)
    return struct.pack(">4B3I", 0, 0, 8, 3, n, size, size) + imgs.tobytes()


def test_idx_reader_on_damaged_payloads():
    raw = idx_payload()
    for case, bad in mutations(raw, flips=300, truncations=40, hot=16):
        a = must_load_or_refuse(lambda bad=bad: read_idx(bad, "f"), case)
        if a is not None:  # accepted: exactly the bytes the header promises
            assert a.dtype == np.uint8 and a.size == len(bad) - 4 - 4 * a.ndim, case


def test_an_idx_header_promising_1e12_items_is_refused_without_allocating():
    raw = struct.pack(">4B3I", 0, 0, 8, 3, 10**6, 10**3, 10**3) + b"\0" * 100
    with pytest.raises(UserError, match="header promises 1000000000016"):
        read_idx(raw, "f")


def test_idx_files_damaged_on_disk(tmp_path):
    """Through the whole loader: gzip damage, then payload damage."""
    from helpers import write_idx

    good = write_idx(tmp_path / "good", n_train=12, n_test=4, size=28)
    name = "t10k-labels-idx1-ubyte.gz"
    blob = (good / name).read_bytes()
    payload = gzip.decompress(blob)
    cases = [*mutations(blob, flips=15, truncations=8),
             *((c, gzip.compress(p)) for c, p in mutations(payload, flips=25, truncations=5,
                                                          hot=9))]
    for i, (case, bad) in enumerate(cases):
        d = tmp_path / f"c{i}"
        d.mkdir()
        for f in good.iterdir():
            (d / f.name).write_bytes(bad if f.name == name else f.read_bytes())
        got = must_load_or_refuse(lambda d=d: load_idx_dataset(DATASETS["fashion-mnist"], d,
                                                               download=False), case)
        if got is not None:
            assert got[2].shape[0] == got[3].shape[0] and int(got[3].max()) < 10, case


def cifar_batch(n=3) -> bytes:
    x = np.arange(n * 3072, dtype=np.uint64).astype(np.uint8).reshape(n, 3072)
    d = {b"data": x, b"labels": [0, 9, 4][:n], b"batch_label": b"b"}
    return pickle.dumps(d, protocol=4)  # bytes as BINBYTES: only numpy globals


def test_cifar_batches_on_damaged_payloads():
    raw = cifar_batch()
    info = DATASETS["cifar10"]
    assert cifar.unpickle_batch(raw, "b")[b"labels"] == [0, 9, 4]  # the intact batch loads
    loaded = 0
    for case, bad in mutations(raw, flips=300, truncations=40, hot=300):
        got = must_load_or_refuse(
            lambda bad=bad: cifar.parse_batch(cifar.unpickle_batch(bad, "b"), b"labels",
                                              info.num_classes, "b"), case)
        if got is not None:
            x, y = got
            assert x.shape[1:] == (3, 32, 32) and len(x) == len(y), case
            assert int(y.min()) >= 0 and int(y.max()) < 10, case
            loaded += 1
    assert loaded > 10  # flips in the pixels leave a valid batch


def test_a_cifar_batch_claiming_a_huge_array_is_refused():
    raw = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, protocol=4)
    shape = b"K\x01M\x00\x0c\x86"  # the array's shape (1, 3072) as pickled
    huge = b"J" + (10**6).to_bytes(4, "little") + b"J" + (10**6).to_bytes(4, "little") + b"\x86"
    assert shape in raw
    with pytest.raises(UserError, match="not a readable CIFAR batch"):
        cifar.unpickle_batch(raw.replace(shape, huge), "b")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_model(path, build_ann("vgg_small"))
    return path


def test_checkpoints_damaged(checkpoint, tmp_path):
    raw = checkpoint.read_bytes()
    header = 8 + int.from_bytes(raw[:8], "little")
    target = tmp_path / "model.safetensors"
    for case, bad in mutations(raw, flips=30, truncations=6, hot=header):
        target.write_bytes(bad)
        for read in (load_model, read_config):
            got = must_load_or_refuse(lambda read=read: read(target), case)
            if got is not None and read is load_model:
                assert all(bool(p.isfinite().all()) for p in got.parameters()), case


def test_a_checkpoint_claiming_a_huge_tensor_is_refused(tmp_path):
    model = build_ann("vgg_small")
    meta = {"config": json.dumps(model.config), "spiking": "{}", "extra": "{}",
            "format": "dietsnn-1"}
    raw = bytearray(st_save({k: v.contiguous() for k, v in model.state_dict().items()}, meta))
    n = int.from_bytes(raw[:8], "little")
    head = json.loads(raw[8:8 + n])
    key = "classifier.4.weight"
    head[key]["shape"] = [10**6, 10**6]
    head[key]["data_offsets"][1] = head[key]["data_offsets"][0] + 4 * 10**12
    new = json.dumps(head).encode()
    path = tmp_path / "huge.safetensors"
    path.write_bytes(len(new).to_bytes(8, "little") + new + bytes(raw[8 + n:]))
    with pytest.raises(UserError, match="not a dietsnn safetensors checkpoint"):
        load_model(path)
    # and a header whose length field alone claims 2^60 bytes
    path.write_bytes((1 << 60).to_bytes(8, "little") + bytes(raw[8:]))
    for read in (load_model, read_config):
        with pytest.raises(UserError, match="header length"):
            read(path)


def test_the_mutations_do_damage():  # the fuzz cases are not all harmless
    refused = sum(must_load_or_refuse(lambda b=b: read_idx(b, "f"), c) is None
                  for c, b in mutations(idx_payload(), flips=50, truncations=10, hot=16))
    assert refused > 10
