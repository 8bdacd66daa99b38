"""Atomic writes: unique temp files per writer, nothing partial left behind, standard JSON only."""
import json
import threading
import time

import numpy as np
import pytest

from score_sde.files import atomic_write, save_npz_atomic, write_json_atomic


def test_concurrent_writers_never_share_a_temp_file(tmp_path):
    # Two processes (here threads) saving the same path at once: with one fixed temp name the second rename
    # found no file, or one writer's bytes mixed into the other's. Now each ends whole, the last one wins.
    path, errors = tmp_path / "checkpoint.pth", []
    start = threading.Barrier(2)

    def write(tag):
        def slow(f):
            start.wait()
            for _ in range(20):
                f.write(tag * 1000)
                time.sleep(0.001)
        try:
            atomic_write(path, slow)
        except Exception as error:  # noqa: BLE001 (collected and asserted below)
            errors.append(error)

    threads = [threading.Thread(target=write, args=(tag,)) for tag in (b"a", b"b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert path.read_bytes() in (b"a" * 20000, b"b" * 20000)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


def test_interrupted_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"fid": 1.0})

    def interrupted(f):
        f.write(b"{half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert json.loads(path.read_text()) == {"fid": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_json_is_standard_or_refused(tmp_path):
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_json_atomic(tmp_path / "r.json", {"loss": float("nan")})
    assert not (tmp_path / "r.json").exists()


def test_npz_round_trip(tmp_path):
    save_npz_atomic(tmp_path / "round_0.npz", samples=np.arange(6).reshape(3, 2))
    with np.load(tmp_path / "round_0.npz") as saved:
        np.testing.assert_array_equal(saved["samples"], np.arange(6).reshape(3, 2))
