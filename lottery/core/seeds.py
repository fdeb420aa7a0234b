"""Seeds derived from a run seed: one 63-bit seed per (run seed, stream, ...) tuple, so every random stream of a run
(data order, augmentation, a control's mask, a second copy's data order) is reproducible from the run seed and apart
from every other stream.

The derivation is numpy's `SeedSequence(words).generate_state(1, uint64) >> 1`, which earlier versions called
directly; it is written out here in plain Python so the pure core needs no numpy, and `tests/test_seeds.py` checks
it against numpy word for word, so no seed (and no result folder's content) changes.
"""

from __future__ import annotations

from collections.abc import Iterable

# numpy/random/bit_generator.pyx: the SeedSequence hash constants (Melissa O'Neill's seed_seq design).
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_XSHIFT, _MASK32, _POOL_SIZE = 16, 0xFFFFFFFF, 4


def _words(entropy: Iterable[int]) -> list[int]:
    """Each non-negative integer as its 32-bit words, least significant first (0 is one word)."""
    out: list[int] = []
    for value in entropy:
        if value < 0:
            raise ValueError(f"seed words must be non-negative, got {value}")
        out.append(value & _MASK32)
        value >>= 32
        while value:
            out.append(value & _MASK32)
            value >>= 32
    return out


def _pool(entropy: list[int]) -> list[int]:
    const = [_INIT_A]

    def hashmix(value: int) -> int:
        value ^= const[0]
        const[0] = (const[0] * _MULT_A) & _MASK32
        value = (value * const[0]) & _MASK32
        return value ^ (value >> _XSHIFT)

    def mix(x: int, y: int) -> int:
        result = (_MIX_MULT_L * x - _MIX_MULT_R * y) & _MASK32
        return result ^ (result >> _XSHIFT)

    pool = [hashmix(entropy[i] if i < len(entropy) else 0) for i in range(_POOL_SIZE)]
    for src in range(_POOL_SIZE):
        for dst in range(_POOL_SIZE):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(_POOL_SIZE, len(entropy)):
        for dst in range(_POOL_SIZE):
            pool[dst] = mix(pool[dst], hashmix(entropy[src]))
    return pool


def derive_seed(*words: int) -> int:
    """A 63-bit seed for the stream named by `words` (e.g. run seed, stream tag, level): equal to
    `int(numpy.random.SeedSequence(list(words)).generate_state(1, dtype=numpy.uint64)[0] >> 1)`."""
    pool = _pool(_words(words))
    const, state = _INIT_B, []
    for i in range(2):  # two 32-bit words make the one uint64
        value = pool[i % _POOL_SIZE] ^ const
        const = (const * _MULT_B) & _MASK32
        value = (value * const) & _MASK32
        state.append(value ^ (value >> _XSHIFT))
    return (state[0] | (state[1] << 32)) >> 1
