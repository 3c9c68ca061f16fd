"""``eprd mirror`` as a command: dispatch, usage and exit codes, the terminal progress bar, and
signatures made by GnuPG (the tool Elastic's own ``.zip.sig`` files come from)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from eprd.cli.main import main
from tests.conftest import ROOT, free_port
from tests.mirrorkit import FaultyUpstream, run_mirror, visible
from tests.test_mirror_faults import package_zip


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyUpstream]:
    upstream = FaultyUpstream()
    await upstream.start()
    yield upstream
    await upstream.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "-from is required"),
        (["-from", "http://127.0.0.1:1"], "-to is required"),
        (["-from", "ftp://example.invalid", "-to", "d"], "-from must be an http:// or https:// URL"),
        (["-from", "http://x", "-to", "d", "-all", "-latest", "2"], "-all and -latest exclude each other"),
        (["-from", "http://x", "-to", "d", "-latest", "-1"], "-latest must be at least 1"),
        (["-from", "http://x", "-to", "d", "-parallel", "0"], "-parallel must be at least 1"),
        (["-from", "http://x", "-to", "d", "-kibana.version", "eight"], "invalid -kibana.version 'eight'"),
        (["-from", "http://x", "-to", "d", "-spec.max", "3.0.1"], "invalid -spec.max '3.0.1'"),
        (["-from", "http://x", "-to", "d", "-parallel", "many"], "invalid value 'many' for flag -parallel"),
        (["-from", "http://x", "-to", "d", "-bogus"], "flag provided but not defined: -bogus"),
        (["-from", "http://x", "-to", "d", "extra"], "unexpected argument: extra"),
        (["-from"], "flag needs an argument: -from"),
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["mirror", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert "Usage: eprd mirror -from URL -to DIR" in err


def test_help_exits_0_with_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mirror", "-h"]) == 0
    err = capsys.readouterr().err
    for flag in ("-from", "-to", "-kibana.version", "-package", "-category", "-prerelease", "-all"):
        assert f"\n  {flag} " in err or f"\n  {flag}\n" in err, flag
    for flag in ("-spec.max", "-latest", "-verify-key", "-parallel", "-prune", "-dry-run"):
        assert f"\n  {flag}" in err, flag
    assert "(default 4)" in err


def test_a_key_that_cannot_be_read_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "garbage.asc").write_text("this is not a key\n")
    for key in (tmp_path / "missing.asc", tmp_path / "garbage.asc"):
        assert main(["mirror", "-from", "http://x", "-to", str(tmp_path / "d"), "-verify-key", str(key)]) == 2
        assert capsys.readouterr().err.startswith(f"eprd mirror: cannot read OpenPGP key {key}: ")


def test_the_server_flags_are_untouched_by_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-version"]) == 0
    assert capsys.readouterr().out.startswith("eprd version ")


async def test_an_unreachable_upstream_exits_1(tmp_path: Path) -> None:
    run = await run_mirror(
        "-from", f"http://127.0.0.1:{free_port()}", "-to", tmp_path / "d", "-attempts", "1"
    )
    assert run.rc == 1
    assert run.err.startswith("eprd mirror: cannot select from http://127.0.0.1:")
    assert not (tmp_path / "d").exists()


async def test_an_upstream_answering_no_list_exits_1(faulty: FaultyUpstream, tmp_path: Path) -> None:
    faulty.entries = {"not": "a list"}  # type: ignore[assignment]
    run = await run_mirror("-from", faulty.base, "-to", tmp_path / "d")
    assert run.rc == 1
    assert "did not answer a list" in run.err


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b"])
async def test_unsafe_names_from_the_upstream_are_not_written(
    faulty: FaultyUpstream, tmp_path: Path, name: str
) -> None:
    faulty.entries = [{"name": name, "version": "1.0.0", "download": "/epr/x/x-1.0.0.zip"}]
    run = await run_mirror("-from", faulty.base, "-to", tmp_path / "d")
    assert run.rc == 1
    assert "unsafe package name or version" in run.err
    assert os.listdir(tmp_path) == []


def _read_all(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return
        if not data:
            return
        chunks.append(data)


async def test_a_terminal_gets_progress_bars_for_versions_and_bytes(
    faulty: FaultyUpstream, tmp_path: Path
) -> None:
    for version in ("1.0.0", "1.1.0"):
        faulty.add("tty", version, package_zip("tty", version))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPR_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eprd", "mirror", "-from", faulty.base, "-to", str(tmp_path / "d"), "-all",
        stdout=slave, stderr=slave, cwd=ROOT, env=env,
    )  # fmt: skip
    os.close(slave)
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(master, chunks), daemon=True)
    reader.start()
    assert await asyncio.wait_for(proc.wait(), 120) == 0
    reader.join(10)
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert "versions: 100%" in screen and "2/2" in screen
    assert "bytes: 100%" in screen
    assert "added tty-1.0.0" in screen and "added tty-1.1.0" in screen
    assert "mirror: 2 added, 0 kept, 0 refused, 0 pruned" in screen
    assert visible(tmp_path / "d") == ["tty-1.0.0.zip", "tty-1.1.0.zip"]


@pytest.fixture
def gnupg() -> Iterator[dict[str, str]]:
    """A GnuPG home with a fresh RSA key (short path: gpg-agent's socket name has a length limit)."""
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    home = tempfile.mkdtemp(prefix="gpg", dir="/tmp")
    env = {**os.environ, "GNUPGHOME": home}
    subprocess.run(
        ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
         "GnuPG Test <gnupg@example.invalid>", "rsa2048", "sign", "never"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    yield env
    subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


async def test_signatures_made_by_gnupg_verify(faulty: FaultyUpstream, tmp_path: Path, gnupg: dict) -> None:
    data = package_zip("gpg", "1.0.0")
    (tmp_path / "gpg-1.0.0.zip").write_bytes(data)
    subprocess.run(
        ["gpg", "--batch", "--armor", "--detach-sign", str(tmp_path / "gpg-1.0.0.zip")],
        env=gnupg, check=True, capture_output=True,
    )  # fmt: skip
    key = subprocess.run(["gpg", "--armor", "--export"], env=gnupg, check=True, capture_output=True).stdout
    (tmp_path / "key.asc").write_bytes(key)
    signature = (tmp_path / "gpg-1.0.0.zip.asc").read_bytes()
    faulty.add("gpg", "1.0.0", data, signature)
    faulty.add("tampered", "1.0.0", package_zip("tampered", "1.0.0"), signature)
    dest = tmp_path / "mirror"
    run = await run_mirror("-from", faulty.base, "-to", dest, "-verify-key", tmp_path / "key.asc")
    assert run.rc == 1
    assert "added gpg-1.0.0" in run.out
    assert "refused tampered-1.0.0: bad signature" in run.out
    assert visible(dest) == ["gpg-1.0.0.zip", "gpg-1.0.0.zip.sig"]
    assert (dest / "gpg-1.0.0.zip.sig").read_bytes() == signature
