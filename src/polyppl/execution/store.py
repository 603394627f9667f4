"""The results folder as a small store: locks, checksums and leftovers.

* A lock per name in a folder (``OUT/.NAME.lock``, ``flock``): a run holds it while it
  reads and writes the files of that name (``compare``: every fit of one model and
  scenario, and the comparison), so two runs on one ``--out`` take turns, and the second
  reuses what the first finished instead of reading half of it or deleting it. The lock
  goes with the process that holds it, however it ends (``kill -9`` included).
* A checksum (SHA-256) of a fit's draws file, written into its record after the draws
  file itself, and checked before the draws are reused or read.
* Leftovers: temporary files (``.NAME.PID-XXXX.part``, see ``atomic_write``) of a process
  that is no longer running are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from polyppl.errors import UserError

_PART = re.compile(r"^\..+\.(\d+)-[0-9a-f]+\.part$")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def folder_lock(folder: Path, name: str, *, shared: bool = False,
                waiting: Callable[[str], None] = lambda line: None) -> Iterator[None]:
    """Hold the lock ``folder/.NAME.lock`` (exclusive, or ``shared`` among readers) while the
    block runs; ``waiting`` is told once when another process (or thread) holds it. Within a
    thread that holds it already, the block just runs (a command holds the lock around a study
    that takes it too)."""
    folder = Path(folder)
    path = folder / f".{name}.lock"
    key = (threading.get_ident(), str(path.absolute()))
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    created = not folder.exists()
    kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    told = False
    while True:
        lock_created = not path.exists()
        try:
            if not shared:
                folder.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            if not shared:
                raise
            yield  # a folder this user may only read: no writer of ours can be in it
            return
        try:
            fcntl.flock(descriptor, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            if not told:
                holder = os.pread(descriptor, 64, 0).decode("ascii", "replace").strip()
                waiting(f"waiting for another polyppl run on {folder} ({name}{', pid ' + holder if holder else ''}) "
                        "to finish; its finished fits will be reused where they match")
                told = True
            fcntl.flock(descriptor, kind)
        # The holder may have removed the lock file before letting go (bad input in a new
        # folder); a lock on that unlinked file excludes no one, so take the current one.
        if _same_file(descriptor, path):
            break
        os.close(descriptor)
    try:
        if not shared:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        _HELD[key] = 1
        yield
    except BaseException:
        if lock_created:  # bad input found inside the block: leave no lock file (or folder) behind
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    finally:
        _HELD.pop(key, None)
        os.close(descriptor)  # closing frees the lock


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        here, there = os.fstat(descriptor), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


#: The locks this process holds, by thread and path, with how many blocks hold each.
_HELD: dict[tuple[int, str], int] = {}


def remove_stale_parts(folder: Path) -> list[Path]:
    """Remove the temporary files in ``folder`` left by processes that are no longer running
    (killed while writing); those removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _PART.match(path.name)
        if match and not _running(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet waited for) writes nothing more.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        return state != "Z"
    return True


def find_saved(out_dir: Path, suffix: str, what: str, command: str, matches: Callable[[dict], bool],
               wanted: str, how_to_pick: Callable[[dict], str]) -> tuple[Path, dict[str, Any]]:
    """The one result file ``OUT_DIR/*SUFFIX`` (a finished study's JSON) that ``matches``,
    and its content; a UserError names what is missing (``wanted``: the options given, and
    ``command`` to make one) or lists ``how_to_pick`` each of several."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UserError(f"{out_dir} is not a folder; give the --out folder of a finished `{command}`")
    found = []
    for path in sorted(out_dir.glob(f"*{suffix}")):
        try:
            saved = json.loads(path.read_bytes())
        except ValueError as exc:
            raise UserError(f"{path} is unreadable ({exc}); run the {what} again") from None
        if matches(saved):
            found.append((path, saved))
    if not found:
        raise UserError(f"no {what} {('matching ' + wanted + ' ') if wanted else ''}in {out_dir}: "
                        f"run `{command} MODEL --out {out_dir}` first")
    if len(found) > 1:
        listing = "; ".join(how_to_pick(saved) for _, saved in found)
        raise UserError(f"{len(found)} {what}s in {out_dir}; pick one with {listing}")
    return found[0]
