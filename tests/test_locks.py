"""One process per run folder: a second one refuses (or, for a teacher cache, waits)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from distill.errors import RecipeError
from distill.locks import folder_lock


def _hold(folder, release_file):
    """Another process holding ``folder``'s lock until ``release_file`` appears."""
    code = textwrap.dedent(f"""
        import pathlib, time
        from distill.locks import folder_lock
        with folder_lock({str(folder)!r}):
            print("held", flush=True)
            while not pathlib.Path({str(release_file)!r}).exists():
                time.sleep(0.05)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    release = tmp_path / "release"
    holder = _hold(tmp_path / "run", release)
    try:
        with pytest.raises(RecipeError, match=rf"run is in use by pid {holder.pid} on .*another "
                                              r"name= or output_dir="):
            with folder_lock(tmp_path / "run"):
                pass
    finally:
        release.touch()
        holder.wait(timeout=30)
    with folder_lock(tmp_path / "run"):  # released when the holder ended
        pass


def test_waiting_takes_the_lock_once_the_holder_is_done(tmp_path, capsys):
    release = tmp_path / "release"
    holder = _hold(tmp_path / "cache", release)
    subprocess.Popen([sys.executable, "-c",
                      f"import time, pathlib; time.sleep(1.0); pathlib.Path({str(release)!r})"
                      ".touch()"])
    start = time.perf_counter()
    with folder_lock(tmp_path / "cache", wait=True):
        waited = time.perf_counter() - start
    holder.wait(timeout=30)
    assert waited >= 0.5 and "waiting for it to finish" in capsys.readouterr().out


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    with folder_lock(tmp_path / "run"):
        with folder_lock(tmp_path / "run"):  # a stage inside its locked run folder
            pass
        with folder_lock(tmp_path / "run" / "baseline"):
            pass
