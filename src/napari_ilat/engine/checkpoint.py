"""Reading published PyTorch checkpoints (pickles) safely.

Published weights come as ``torch.save`` pickles: Lightning ``.ckpt`` files, iLAT's
``.pth`` files (the legacy, non-zip format). Unpickling can run arbitrary code, so they are
opened only with ``torch.load(..., weights_only=True)``: PyTorch's restricted unpickler,
which rebuilds tensors and plain containers (dict, list, tuple, str, numbers) and refuses
every other object. There is deliberately no way around it here: a file that needs more is
refused, with the names of the Python objects it holds.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import zipfile
from pathlib import Path

import torch

PROGRESS_MIN_BYTES = 32 * 2**20  # show a progress bar for files at least this big

# globals torch's weights_only unpickler rebuilds (reported only when something else is there)
_PLAIN = re.compile(r"^(torch\.|collections\.OrderedDict$|builtins\.(set|frozenset|bytearray|complex|slice)$)")


class _ProgressReader(io.RawIOBase):
    """A read-only file wrapper that advances a tqdm bar as bytes are read."""

    def __init__(self, f, bar):
        self._f, self._bar = f, bar

    def readable(self):
        return True

    def seekable(self):
        return True

    def read(self, n=-1):
        data = self._f.read(n)
        self._bar.update(max(0, self._f.tell() - self._bar.n))
        return data

    def readinto(self, b):
        n = self._f.readinto(b)
        self._bar.update(max(0, self._f.tell() - self._bar.n))
        return n

    def readline(self, size=-1):
        return self._f.readline(size)

    def seek(self, pos, whence=0):
        return self._f.seek(pos, whence)

    def tell(self):
        return self._f.tell()


def pickle_globals(path) -> list[str]:
    """The Python objects (module.name) a torch pickle refers to, in first-seen order.

    Reads the opcodes only (pickletools), never unpickles. Zip format: ``*/data.pkl``;
    legacy format: the successive pickles at the start of the file."""
    path = Path(path)
    streams = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            streams = [z.read(n) for n in z.namelist() if n.endswith("data.pkl")]
    else:
        streams = [path.read_bytes()]
    found: dict[str, None] = {}
    for data in streams:
        f = io.BytesIO(data)
        for _ in range(4):  # legacy: magic number, protocol, sys info, the object
            strings: list[str] = []
            try:
                for op, arg, _pos in pickletools.genops(f):
                    if op.name == "GLOBAL":
                        found[str(arg).replace(" ", ".")] = None
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found[f"{strings[-2]}.{strings[-1]}"] = None
                    elif isinstance(arg, str):
                        strings.append(arg)
            except Exception:  # the rest of a legacy file is raw storage bytes
                break
    return list(found)


def load_checkpoint(path, what: str = "checkpoint", progress: bool | None = None):
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors.

    ``progress``: None = a bar on a terminal for files over 32 MiB; True/False forces it."""
    from tqdm import tqdm

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{what} {path} is empty (0 bytes): an interrupted download?")
    show = (size >= PROGRESS_MIN_BYTES) if progress is None else progress
    disable = None if (show and progress is None) else not show  # None: only on a terminal
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # a zip (torch >= 1.6) or a pickle
        raise ValueError(
            f"{what} {path} is not a PyTorch checkpoint: it starts with {head!r}, neither a zip nor a pickle "
            f"({size} bytes)"
        )
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=path.name, disable=disable) as bar:
        try:
            return torch.load(_ProgressReader(f, bar), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            msg = str(e)
            # (every weights_only failure mentions weights_only; only these name a refused object)
            if "GLOBAL" in msg or "Unsupported" in msg:
                named = re.findall(r"GLOBAL ([\w.]+)", msg)
                try:
                    others = [g for g in pickle_globals(path) if not _PLAIN.match(g)]
                except Exception:
                    others = []
                names = ", ".join(dict.fromkeys(named + others)) or msg.splitlines()[0][:200]
                raise ValueError(
                    f"{what} {path} was refused: it holds Python objects other than tensors and plain "
                    f"containers ({names}), and napari-ilat opens pickles only with "
                    "torch.load(weights_only=True), which cannot run code. Save its state_dict alone "
                    "(in an environment you trust) and convert that."
                ) from None
            raise _corrupt(path, what, size, e) from None
        except (EOFError, RuntimeError, OSError, ValueError, KeyError, IndexError) as e:
            raise _corrupt(path, what, size, e) from None


def _corrupt(path, what, size, e) -> ValueError:
    return ValueError(
        f"{what} {path} is truncated or not a PyTorch checkpoint ({size} bytes; re-download it). "
        f"torch.load said: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else '(no detail)'}"
    )


def state_dict_of(obj, path, keys=("state_dict", "g_model", "model"), what: str = "checkpoint") -> dict:
    """The tensors of a loaded checkpoint: a Lightning dict (``state_dict``), an iLAT dict
    (``g_model`` / ``model`` beside optimizer state), or a bare state dict."""
    if isinstance(obj, dict):
        for k in keys:
            if isinstance(obj.get(k), dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{what} {path} holds no state dict (a {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        top = ", ".join(map(str, list(obj)[:8]))
        raise ValueError(
            f"{what} {path}: {len(bad)} entries are not tensors (e.g. {bad[0]!r}); expected a state dict "
            f"or a dict with one under {', '.join(keys)} (keys found: {top})"
        )
    return dict(obj)


__all__ = ["load_checkpoint", "pickle_globals", "state_dict_of"]
