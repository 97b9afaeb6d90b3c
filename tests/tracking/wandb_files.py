"""The records of an offline W&B run's `.wandb` file, read as `wandb sync` reads them: a LevelDB-style
log (a 7-byte header, 32 KiB blocks of chunks, each `<checksum:u32><length:u16><type:u8>` then
data; full, first, middle, last) of `wandb_internal_pb2.Record` messages. wandb 0.2x dropped its
Python reader (its Go core reads them now), and a test should see what the file holds."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7  # ":W&B", magic 0xBEE1, version
CHUNK = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    offset, pending = HEADER, b""
    while offset + CHUNK.size <= len(data):
        left = BLOCK - offset % BLOCK
        if left < CHUNK.size:  # the block's tail is padding
            offset += left
            continue
        _, length, kind = CHUNK.unpack_from(data, offset)
        offset += CHUNK.size
        if length == 0 and kind == 0:
            break
        chunk, offset = data[offset : offset + length], offset + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def records(path: Path) -> Iterator[object]:
    from wandb.proto import wandb_internal_pb2

    for payload in payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record
