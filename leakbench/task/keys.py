"""Secret instance keys and the random streams of an instance (SPEC §4.5).

Every run and every ``leakbench generate`` call draws a fresh 256-bit key; instance ``seed``'s
randomness comes from (key, seed) alone, so the same key and seed give the same instance byte for
byte, and nobody without the key can regenerate its labels, its holdout or its process. The key
is kept in a ``private/`` folder (0700) as ``instance.key`` (0600), where no sandbox worker can
read it.

Each stream (the visible features, the label noise, the holdout, the process, each leak kind, the
disguised names) is seeded from an HMAC-SHA256 of the key, the seed and the stream's name through
``numpy.random.SeedSequence``. The hash makes the streams independent even to someone who could
recover one stream's PCG64 state from the data it shows (PCG64 is not a cryptographic generator):
the label noise and the holdout come from streams whose state says nothing about the others.

With ``task.public_seeds`` there is no key and the streams are the original project's, number for
number: one ``default_rng(seed)`` for the data (features, then noise, then the holdout),
``[seed, 1, index]`` for leak kind ``index``, ``[seed, 2]`` for the process, ``[seed, 3]`` for the
disguised names. Anyone can regenerate those instances, so they are not tamper-proof.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

import numpy as np

from leakbench.errors import LeakbenchError, UsageError
from leakbench.store.files import write_atomic

KEY_BYTES = 32
KEY_FILE = "instance.key"
PRIVATE_DIR_MODE = 0o700
KEY_FILE_MODE = 0o600


def new_key() -> bytes:
    """A fresh 256-bit instance key from the operating system's CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


def check_key(key: object) -> bytes:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError(f"an instance key is {KEY_BYTES} bytes (use leakbench.task.keys.new_key)")
    return key


def write_key(folder: Path, key: bytes) -> Path:
    """Store ``key`` as ``folder/instance.key`` (0600), making ``folder`` 0700."""
    folder = Path(folder)
    folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    folder.chmod(PRIVATE_DIR_MODE)
    path = folder / KEY_FILE
    write_atomic(path, check_key(key).hex() + "\n", mode=KEY_FILE_MODE)
    return path


def read_key(folder: Path) -> bytes:
    """The key stored by ``write_key`` in ``folder``."""
    path = Path(folder) / KEY_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise LeakbenchError(
            f"{path}: instance key not found",
            hint="without its key an instance cannot be regenerated; start a new run",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the instance key: {exc}") from None
    try:
        return check_key(bytes.fromhex(text))
    except ValueError:
        raise UsageError(f"{path}: not an instance key ({KEY_BYTES * 2} hex digits)") from None


def _keyed(key: bytes, seed: int, stream: str) -> np.random.Generator:
    digest = hmac.new(key, f"leakbench-instance/{seed}/{stream}".encode(), hashlib.sha256)
    # pool_size=8 keeps all 256 bits of the digest in the SeedSequence's pool.
    entropy = np.random.SeedSequence(int.from_bytes(digest.digest(), "big"), pool_size=8)
    return np.random.default_rng(entropy)


class InstanceStreams:
    """The random streams of instance ``seed``: keyed, or with ``key=None`` the public ones.

    ``features``, ``noise`` and ``holdout`` are one shared generator in the public streams (the
    original project drew them in that order from one ``default_rng(seed)``) and three
    independent ones under a key.
    """

    def __init__(self, key: bytes | None, seed: int) -> None:
        self._key = None if key is None else check_key(key)
        self.seed = seed
        if self._key is None:
            base = np.random.default_rng(seed)
            self.features = self.noise = self.holdout = base
        else:
            self.features = _keyed(self._key, seed, "features")
            self.noise = _keyed(self._key, seed, "noise")
            self.holdout = _keyed(self._key, seed, "holdout")

    def _stream(self, name: str, public: list[int]) -> np.random.Generator:
        if self._key is None:
            return np.random.default_rng([self.seed, *public])
        return _keyed(self._key, self.seed, name)

    def leak(self, index: int) -> np.random.Generator:
        """Leak kind ``index``'s own stream: adding a leak never shifts another draw."""
        return self._stream(f"leak/{index}", [1, index])

    def process(self) -> np.random.Generator:
        """The stream the instance's data-generating process is drawn from (under a prior)."""
        return self._stream("process", [2])

    def names(self) -> np.random.Generator:
        """The stream that orders disguised leak names."""
        return self._stream("names", [3])
