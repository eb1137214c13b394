"""What the partition-owned layout (layout 2) costs on disk: the same keys with and without
their 2-byte partition, compacted.

For ``--urls`` URLs of ``--hosts`` hosts (72-byte URLs, a host's partition of 256), the keys
of the three big tables are written to SST files with the stores' own options (bloom filter,
block-based table, compression) twice, in key order: as layout 1 wrote them (the table's
letter, then the rest) and as layout 2 does (the letter, the partition, then the rest):

- ``f`` (DB worker: URLs seen): ``f [P] fingerprint``, no value;
- ``q`` (DB worker: URLs queued): ``q [P] layer -score seq``, the packed entry;
- ``s`` (strategy worker: URL states): ``s [P] fingerprint``, the 13-byte record.

It prints bytes per URL of each and their ratio, and writes ``results/layout-bytes.json``::

    .venv/bin/python -m benchmarks.layout_bytes --urls 2000000
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import tempfile
from typing import Any

from rocksdict import SstFileWriter

from benchmarks.queue_cut import save
from raycrawl.formats.entry import Entry
from raycrawl.storage.store import _options, sortable_float, u64
from raycrawl.urls import partition_of


def _sst_bytes(rows: list[tuple[bytes, bytes]], folder: str, name: str) -> int:
    path = os.path.join(folder, f"{name}.sst")
    writer = SstFileWriter(_options())
    writer.open(path)
    for key, value in sorted(rows):
        writer[key] = value
    writer.finish()
    size = os.path.getsize(path)
    os.remove(path)
    return size


def tables(urls: int, hosts: int, seed: int = 1) -> dict[str, tuple[list, list]]:
    """Per table: (layout 1 rows, layout 2 rows)."""
    rng = random.Random(seed)
    record = struct.Struct(">BHd")
    out: dict[str, tuple[list, list]] = {"f": ([], []), "q": ([], []), "s": ([], [])}
    for seq in range(urls):
        host = f"www.host{rng.randrange(hosts)}.example.com"
        url = f"https://{host}/section/{rng.randrange(10**6)}/item-{rng.randrange(10**9)}.html"
        fp, part = rng.getrandbits(64), partition_of(host, 256)
        p2 = part.to_bytes(2, "big")
        out["f"][0].append((b"f" + u64(fp), b""))
        out["f"][1].append((b"f" + p2 + u64(fp), b""))
        score = rng.random()
        entry = Entry(url, fp, host, part, 2, score).pack()
        rest = (2).to_bytes(2, "big") + sortable_float(-score) + u64(seq)
        out["q"][0].append((b"q" + rest, entry))
        out["q"][1].append((b"q" + p2 + rest, entry))
        state = record.pack(1, 2, score)
        out["s"][0].append((b"s" + u64(fp), state))
        out["s"][1].append((b"s" + p2 + u64(fp), state))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=2_000_000)
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "layout-bytes.json"))
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"urls": args.urls, "hosts": args.hosts}
    with tempfile.TemporaryDirectory() as folder:
        for name, (old, new) in tables(args.urls, args.hosts).items():
            before = _sst_bytes(old, folder, f"{name}-1") / args.urls
            after = _sst_bytes(new, folder, f"{name}-2") / args.urls
            result[name] = {"layout1_bytes_per_url": round(before, 2),
                            "layout2_bytes_per_url": round(after, 2),
                            "ratio": round(after / before, 4)}
            print(f"{name}: {before:.2f} -> {after:.2f} bytes a URL ({after / before:.3f}x)",
                  flush=True)
    save(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
