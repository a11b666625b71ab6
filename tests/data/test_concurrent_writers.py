"""Concurrent writers: one writer per store (a lock beside it); no command that exits 0 loses
a sample, and a refused one says who holds the store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import fsspec
import numpy as np
import pytest

from atoken.data import MediaStore, MediaWriter, StoreLockedError, verify_store
from atoken.data.store_lock import StoreLock
from atoken.testing.faults import concurrent_imports, killed_import


def test_a_second_writer_is_refused_naming_the_holder_then_waits_its_turn(tmp_path):
    url = tmp_path / "s.zarr"
    with MediaWriter(url) as first:
        first.add("a", np.zeros((2, 2, 3), np.uint8))
        with pytest.raises(StoreLockedError, match=r"another writer holds it \(process \d+ on"):
            MediaWriter(url)
        with pytest.raises(StoreLockedError):  # the latent writer takes the same lock
            StoreLock(url, timeout=0.1).acquire()
    done = threading.Event()
    holder = StoreLock(url).acquire()

    def release_soon():
        done.wait(0.3)
        holder.release()

    threading.Thread(target=release_soon).start()
    with MediaWriter(url, lock_timeout=30) as second:  # waits, then sees the first's sample
        assert second.committed == 1
        second.add("b", np.ones((2, 2, 3), np.uint8))
    assert MediaStore(url).names == ("a", "b") and verify_store(url).ok


def test_memory_urls_lock_with_an_exclusive_marker():
    url = "memory://locks/one.zarr"
    with StoreLock(url):
        with pytest.raises(StoreLockedError, match="another writer"):
            StoreLock(url).acquire()
    with StoreLock(url):  # released: free again
        pass


def test_a_marker_left_by_a_dead_writer_on_this_host_is_stale_and_taken_over():
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    fs = fsspec.filesystem("memory")
    marker = "/locks/.dead.zarr.atoken-lock"
    holder = {"pid": int(dead.stdout), "host": socket.gethostname(), "since": "then"}
    fs.pipe_file(marker, json.dumps(holder).encode())
    with StoreLock("memory://locks/dead.zarr", timeout=1):  # the dead pid's marker is stale
        assert json.loads(fs.cat_file(marker))["pid"] == os.getpid()
    alive = {**holder, "pid": os.getppid()}  # a live process: still held
    fs.pipe_file(marker, json.dumps(alive).encode())
    with pytest.raises(StoreLockedError, match=f"process {os.getppid()}"):
        StoreLock("memory://locks/dead.zarr").acquire()
    away = {**holder, "host": "another-host"}  # another host's pid cannot be checked
    fs.pipe_file(marker, json.dumps(away).encode())
    with pytest.raises(StoreLockedError, match="another-host"):
        StoreLock("memory://locks/dead.zarr").acquire()
    fs.rm(marker)


@pytest.mark.parametrize("wait", [0.0, 60.0])
def test_two_imports_at_once_never_lose_a_sample(tmp_path, wait):
    total = None
    for trial in range(3):
        result = concurrent_imports(tmp_path / f"t{trial}", images_per_import=12, wait=wait)
        total = result if total is None else total + result
    assert total.lost == 0 and total.checksum_failures == 0, total
    assert total.found == total.expected  # nothing else in the store either
    if wait:  # queued behind each other: both imports land, every time
        assert total.refused == 0 and total.expected == 3 * 24


def test_an_import_killed_at_a_random_moment_resumes_whole(tmp_path):
    trial = killed_import(tmp_path, images=40, seed=1)
    assert trial.lost == 0 and trial.checksum_failures == 0 and trial.found == 40, trial


@pytest.mark.slow
def test_training_killed_twice_and_resumed_ends_bit_identical(tmp_path):
    from atoken.testing.faults import killed_training

    trial = killed_training(tmp_path, steps=12, kills=2, seed=3)
    assert trial.mismatched == 0 and trial.lost == 0 and trial.found == 12, trial


_FORKING_HOLDER = """
import os, sys, time
from atoken.data.store_lock import StoreLock

lock = StoreLock(sys.argv[1]).acquire()
child = os.fork()
if child == 0:  # a data-loader worker, say: not the holder
    lock.release()  # must not unlock the parent's lock
    time.sleep(60)
    os._exit(0)
time.sleep(0.5)
print(child, flush=True)
time.sleep(60)
"""


def test_a_forked_child_neither_releases_nor_keeps_its_parents_lock(tmp_path):
    """Data workers are forked while the training holds its run folder's lock: the holder's
    death frees it although they linger, and a child's release frees nothing."""
    url = str(tmp_path / "s.zarr")
    holder = subprocess.Popen(
        [sys.executable, "-c", _FORKING_HOLDER, url], stdout=subprocess.PIPE, text=True
    )
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(StoreLockedError, match=f"process {holder.pid}"):
            StoreLock(url).acquire()  # the child's release did not unlock it
        holder.kill()
        holder.wait(timeout=30)
        os.kill(child, 0)  # the child still runs
        with StoreLock(url):  # and the lock went with the holder
            pass
    finally:
        holder.kill()
        os.kill(child, 9)
