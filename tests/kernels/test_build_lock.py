"""The kernels' build lock (kernels/build.py), on CPU with real processes: the lock file a
build killed half-way leaves behind is cleared, and a build still running in another process
is waited for, its lock left alone."""
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

pytest.importorskip("fcntl")

from archbench.kernels.build import build_directory, build_lock  # noqa: E402

# a process that builds as torch does: holds our lock, creates torch's lock file, works for
# a while, then removes it; or is killed before it can (what a sweep cell's timeout does)
BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from archbench.kernels.build import build_lock
    d = Path(sys.argv[1])
    with build_lock(d):
        (d / "lock").touch()
        print("building", flush=True)
        time.sleep(float(sys.argv[2]))
        (d / "lock").unlink()
""")


def _start_builder(d, seconds):
    p = subprocess.Popen([sys.executable, "-c", BUILDER, str(d), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "building"
    return p


def test_a_killed_build_leaves_no_lock_that_blocks_the_next(tmp_path):
    p = _start_builder(tmp_path, 60)
    p.kill()
    p.wait()
    assert (tmp_path / "lock").exists()  # what torch would wait on forever
    t0 = time.monotonic()
    with pytest.warns(UserWarning, match="interrupted build"):
        with build_lock(tmp_path):
            assert not (tmp_path / "lock").exists()
    assert time.monotonic() - t0 < 5


def test_a_running_build_is_waited_for_and_its_lock_kept(tmp_path):
    p = _start_builder(tmp_path, 1.5)
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a live build's lock must not be taken for a stale one
        with build_lock(tmp_path):
            waited = time.monotonic() - t0
            assert not (tmp_path / "lock").exists()  # the builder finished and removed it
    p.wait()
    assert p.returncode == 0 and waited > 1.0


def test_the_build_directory_follows_torch_extensions_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    d = build_directory("archbench_x")
    assert d == tmp_path / "ext" / "archbench_x" and d.is_dir()
