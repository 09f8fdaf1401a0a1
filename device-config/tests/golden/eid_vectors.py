#!/usr/bin/env python3
"""Writes eid_vectors.json: Eddystone-EID test vectors computed independently of the Rust code.

Follows the two AES-128 steps of the Eddystone "EID computation" document with Python's
`cryptography` package (pip install cryptography), then: python3 eid_vectors.py > eid_vectors.json
"""
import json

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def aes_block(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def temporary_key(identity_key: bytes, time: int) -> bytes:
    block = bytes(11) + b"\xff" + bytes(2) + ((time >> 16) & 0xFFFF).to_bytes(2, "big")
    return aes_block(identity_key, block)


def eid(identity_key: bytes, exponent: int, time: int) -> bytes:
    quantized = time & ~((1 << exponent) - 1) & 0xFFFFFFFF
    block = bytes(11) + bytes([exponent]) + quantized.to_bytes(4, "big")
    return aes_block(temporary_key(identity_key, time), block)[:8]


KEYS = [
    bytes(16),
    bytes.fromhex("e2c56db5dffb48d2b060d0f5a71096e0"),
    bytes(range(16)),
]
CASES = [
    (0, 0),
    (0, 1),
    (4, 1000),
    (10, 65535),   # last second before the temporary key rolls over
    (10, 65536),   # first second of the next temporary key
    (10, 65280),   # the roll-over-adjacent start the spec recommends
    (15, 123456789),
    (8, 0xFFFFFFFF),
    (0, 0x00FFFF00),
]

vectors = []
for key in KEYS:
    for exponent, time in CASES:
        vectors.append({
            "identity_key": key.hex(),
            "exponent": exponent,
            "time": time,
            "temporary_key": temporary_key(key, time).hex(),
            "eid": eid(key, exponent, time).hex(),
        })
print(json.dumps(vectors, indent=1))
