"""Benchmark of cutout packs: objects, requests, bytes and read rate, packs against per-galaxy.

Run ``python bench/packs.py`` (``--quick``: 4,000 galaxies). It starts moto's S3 server in a
child process (``radon_pipeline.moto_server``) and renders ``--distinct`` GalSim cutouts
(``radon_pipeline.render_corpus``); galaxy ``i`` stores cutout ``i % distinct``. ``--n``
galaxies (20,000 by default) are placed uniformly in a box of sky at ``--density`` galaxies
per square degree (default 242,000: 10¹⁰ galaxies over the sky, the scale packs are for; 116 is
Gaia DR3's 4.8 million galaxy candidates), and handled in the order the queue would give them
(FIFO by ``seq``, i.e. ingest order):

1. **Per-galaxy objects** (``GALPIPE_CUTOUT_PACKING=none``): fetch batches of ``--fetch-batch``
   stored as the fetch pipeline stores them (:func:`galpipe.pipelines.fetch.keep_cutout`: PUT,
   read back, SHA-256) on ``--threads`` threads; then radon batches of ``--radon-batch`` read,
   checked and decoded as radon reads them
   (:func:`galpipe.pipelines.stored_cutouts.load_read_unit` over
   :func:`galpipe.pipelines.cutout_packs.read_units`, ``--threads`` threads: the code of
   ``StoredCutoutReader.submit`` without its database query).
2. **Packs, catalogue in tile order** (``healpix``, order ``--order``): the same, with the
   galaxies ingested sorted by their NESTED HEALPix index at order 12 (the order of Gaia
   ``source_id``, whose top bits are that index); each batch goes through
   :class:`~galpipe.pipelines.cutout_packs.CutoutPacker`.
3. **Packs, catalogue in random order**: the packs that ``--n`` galaxies over the whole sky
   ingested in random order would give are counted from the batches' tiles (not stored: each
   pack is a PUT like a per-galaxy one).

Every request to the store is counted (a wrapper around the S3 store). Requests and objects
per 10⁶ galaxies are the measured counts scaled by 10⁶ / ``--n`` (the packing ratio depends on
the density and the batch, not on ``n``); dollars use S3 Standard's request prices, PUT
$0.005 and GET $0.0004 per 1,000. The read rate is galaxies read, checked and decoded per
second against moto on this machine (moto's CPU competes with the reader's; the ratio is the
figure). The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from galpipe.db.cutouts import CutoutRecord
from galpipe.pipelines.base import Done
from galpipe.pipelines.cutout_packs import CutoutPacker, PackedCutout, healpix_tiles, read_units
from galpipe.pipelines.fetch import keep_cutout
from galpipe.pipelines.stored_cutouts import DecodedCutout, load_read_unit
from galpipe.storage import ObjectStore, StoredObject, sha256_hex
from galpipe.survey.layout import BANDS, LAYER, PIXSCALE_ARCSEC
from galpipe.survey.layout import CUTOUT_SIZE_PX as SIZE
from radon_pipeline import Corpus, moto_server, render_corpus, s3_store

PUT_USD_PER_1000 = 0.005
GET_USD_PER_1000 = 0.0004
SKY_DEG2 = 41_253.0
#: 10¹⁰ galaxies over the whole sky, per square degree (the scale packs are for).
DENSITY_1E10 = 1e10 / SKY_DEG2
FIRST_ID = 1_000_000


class CountingStore:
    """An object store with every request counted by kind, and the bytes moved."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.counts = {"put": 0, "get": 0, "get_range": 0}
        self.bytes_put = 0
        self.bytes_read = 0
        self.keys: set[str] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.inner.url

    def object_url(self, key: str) -> str:
        return self.inner.object_url(key)

    def _count(self, kind: str, nbytes: int, key: str | None = None) -> None:
        with self._lock:
            self.counts[kind] += 1
            if kind == "put":
                self.bytes_put += nbytes
                self.keys.add(key or "")
            else:
                self.bytes_read += nbytes

    def put(self, key: str, data: bytes) -> StoredObject:
        stored = self.inner.put(key, data)
        self._count("put", len(data), key)
        return stored

    def get(self, key: str, sha256: str | None = None) -> bytes:
        data = self.inner.get(key, sha256)
        self._count("get", len(data))
        return data

    def get_range(self, key: str, offset: int, length: int, sha256: str | None = None) -> bytes:
        data = self.inner.get_range(key, offset, length, sha256)
        self._count("get_range", len(data))
        return data

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {**self.counts, "bytes_put": self.bytes_put, "bytes_read": self.bytes_read}


@dataclass
class Phase:
    """Requests and bytes of one phase (the difference of two counter snapshots) and its time."""

    counts: dict[str, int]
    seconds: float
    galaxies: int

    @property
    def gets(self) -> int:
        return self.counts["get"] + self.counts["get_range"]


@dataclass
class Layout:
    """One way of storing the run: its fetch (write) and radon (read) phases."""

    name: str
    objects: int
    write: Phase
    read: Phase
    extra: dict[str, Any] = field(default_factory=dict)


def positions(n: int, density: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions uniform in a box of ``n / density`` square degrees centred on
    (RA 180°, Dec 0°), where a degree of RA is a degree on the sky (degrees)."""
    side = math.sqrt(n / density)
    rng = np.random.default_rng(seed)
    ra = 180.0 + rng.uniform(-side / 2, side / 2, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n) * math.sin(math.radians(side / 2))))
    return ra, dec


def record_for(i: int, corpus: Corpus) -> tuple[CutoutRecord, bytes]:
    sid = FIRST_ID + i
    data = corpus.blob_for(i)
    record = CutoutRecord(
        sid,
        LAYER,
        BANDS,
        "",
        SIZE,
        PIXSCALE_ARCSEC,
        "bench",
        f"cutouts/{LAYER}/bench/{sid}.fits",
        sha256_hex(data),
        len(data),
    )
    return record, data


def fetch_phase(
    store: CountingStore,
    corpus: Corpus,
    order: Sequence[int],
    ra: np.ndarray,
    dec: np.ndarray,
    packer: CutoutPacker | None,
    args: argparse.Namespace,
) -> tuple[Phase, list[CutoutRecord]]:
    """Store the galaxies batch by batch as the fetch pipeline does; their cutouts rows."""
    before = store.snapshot()
    started = time.perf_counter()
    records: list[CutoutRecord] = []
    with ThreadPoolExecutor(args.threads) as executor:
        for start in range(0, len(order), args.fetch_batch):
            batch = order[start : start + args.fetch_batch]

            def keep(i: int) -> Any:
                record, data = record_for(i, corpus)
                return keep_cutout(store, packer, "fetch", record, data, (ra[i], dec[i]))

            outcomes = list(executor.map(keep, batch))
            if packer is not None:
                outcomes = packer.pack(outcomes, executor)
            for outcome in outcomes:
                if not isinstance(outcome, Done):
                    raise RuntimeError(f"bench fetch failed: {outcome}")
                result = outcome.result
                records.append(result.record if isinstance(result, PackedCutout) else result)
    return _phase(store, before, started, len(order)), records


def read_phase(
    store: CountingStore, records: Sequence[CutoutRecord], args: argparse.Namespace
) -> Phase:
    """Read, check and decode the galaxies in radon batches, as radon's reader does."""
    before = store.snapshot()
    started = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as executor:
        for start in range(0, len(records), args.radon_batch):
            batch = records[start : start + args.radon_batch]
            items = [(r.source_id, r) for r in batch]
            reads = [[items[i] for i in unit] for unit in read_units(list(batch))]
            for loaded in executor.map(lambda read: load_read_unit(store, read), reads):
                bad = [x for x in loaded if not isinstance(x, DecodedCutout)]
                if bad:
                    raise RuntimeError(f"bench read failed: {bad[0]}")
    return _phase(store, before, started, len(records))


def _phase(store: CountingStore, before: dict[str, int], started: float, n: int) -> Phase:
    seconds = time.perf_counter() - started
    after = store.snapshot()
    return Phase({k: after[k] - before[k] for k in after}, seconds, n)


def random_order_packs(n: int, order: int, batch: int, seed: int) -> int:
    """Packs of a catalogue of ``n`` galaxies over the whole sky ingested in random order:
    distinct tiles per fetch batch, summed (a patch as small as the measured run's would put
    a random batch in its few tiles and flatter the random order)."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    tiles = healpix_tiles(ra, dec, order)
    return sum(len(set(tiles[s : s + batch].tolist())) for s in range(0, n, batch))


def per_million(layout: Layout, n: int) -> dict[str, float]:
    """Objects, requests and request dollars per 10⁶ galaxies (measured counts scaled)."""
    scale = 1e6 / n
    puts = layout.write.counts["put"] * scale
    write_gets = layout.write.gets * scale
    read_gets = layout.read.gets * scale
    usd = (puts * PUT_USD_PER_1000 + (write_gets + read_gets) * GET_USD_PER_1000) / 1000
    return {
        "objects": layout.objects * scale,
        "puts": puts,
        "fetch_gets": write_gets,
        "radon_gets": read_gets,
        "request_usd": usd,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--n", type=int, default=20_000, help="galaxies of the measured run")
    parser.add_argument(
        "--density", type=float, default=DENSITY_1E10, help="galaxies per deg² (default: 10¹⁰)"
    )
    parser.add_argument("--order", type=int, default=7, help="HEALPix order of the packs")
    parser.add_argument("--fetch-batch", type=int, default=32, help="fetch tasks per claim")
    parser.add_argument("--radon-batch", type=int, default=256, help="radon tasks per claim")
    parser.add_argument("--threads", type=int, default=16, help="concurrent store requests")
    parser.add_argument("--distinct", type=int, default=64, help="distinct rendered cutouts")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 4000)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    corpus = render_corpus(args.distinct)
    ra, dec = positions(args.n, args.density, args.seed)
    tiles = healpix_tiles(ra, dec, args.order)
    tile_order = [int(i) for i in np.argsort(healpix_tiles(ra, dec, 12), kind="stable")]
    blob_bytes = sum(len(corpus.blob_for(i)) for i in range(args.n))
    print(
        f"{args.n:,} galaxies at {args.density:g}/deg² ({args.n / args.density:,.1f} deg², "
        f"{len(set(tiles.tolist())):,} order-{args.order} tiles), {blob_bytes / args.n:,.0f} "
        f"bytes a cutout; fetch batch {args.fetch_batch}, radon batch {args.radon_batch}",
        flush=True,
    )
    layouts: list[Layout] = []
    with moto_server() as (endpoint, _):
        for name, order, packing in (
            ("per_galaxy", tile_order, False),
            ("packs_tile_order", tile_order, True),
        ):
            store = CountingStore(s3_store(endpoint))
            packer = CutoutPacker(store, "fetch", LAYER, args.order) if packing else None
            write, records = fetch_phase(store, corpus, order, ra, dec, packer, args)
            # radon claims in the order fetch completed the tasks: the records' order.
            read = read_phase(store, records, args)
            layouts.append(Layout(name, len(store.keys), write, read))
            print(
                f"{name:>17}: {len(store.keys):,} objects; fetch {write.counts['put']:,} PUTs "
                f"+ {write.gets:,} GETs in {write.seconds:.1f} s; radon {read.gets:,} GETs, "
                f"{read.counts['bytes_read'] / 1e6:,.1f} MB in {read.seconds:.1f} s = "
                f"{args.n / read.seconds:,.0f} galaxies/s",
                flush=True,
            )
    random_packs = random_order_packs(args.n, args.order, args.fetch_batch, args.seed + 1)
    base, packs = layouts
    ratio_tile = base.objects / packs.objects
    ratio_random = args.n / random_packs
    print(
        f"packing ratio (galaxies per pack): tile order {ratio_tile:.1f}; random order over "
        f"the whole sky {ratio_random:.2f} ({random_packs:,} packs, counted)"
    )
    result: dict[str, Any] = {
        "n": args.n,
        "density_per_deg2": args.density,
        "order": args.order,
        "fetch_batch": args.fetch_batch,
        "radon_batch": args.radon_batch,
        "bytes_per_cutout": blob_bytes / args.n,
        "packing_ratio_tile_order": ratio_tile,
        "packing_ratio_random_order": ratio_random,
    }
    for layout in layouts:
        million = per_million(layout, args.n)
        result[layout.name] = {
            **{f"{k}_per_1e6": round(v, 2) for k, v in million.items()},
            "bytes_stored": layout.write.counts["bytes_put"],
            "bytes_read_by_radon": layout.read.counts["bytes_read"],
            "fetch_store_s": round(layout.write.seconds, 2),
            "radon_read_per_s": round(args.n / layout.read.seconds, 1),
        }
        print(
            f"per 10⁶ galaxies, {layout.name}: {million['objects']:,.0f} objects, "
            f"{million['puts']:,.0f} PUTs, {million['fetch_gets'] + million['radon_gets']:,.0f} "
            f"GETs, ${million['request_usd']:,.2f} of requests (x 10⁴ for 10¹⁰ galaxies: "
            f"${million['request_usd'] * 1e4:,.0f})"
        )
    result["ratios"] = {
        "objects_per_galaxy_over_packs": base.objects / packs.objects,
        "puts_per_galaxy_over_packs": base.write.counts["put"] / packs.write.counts["put"],
        "radon_gets_per_galaxy_over_packs": base.read.gets / packs.read.gets,
        "radon_read_rate_packs_over_per_galaxy": base.read.seconds / packs.read.seconds,
        "request_usd_per_galaxy_over_packs": per_million(base, args.n)["request_usd"]
        / per_million(packs, args.n)["request_usd"],
    }
    for key, value in result["ratios"].items():
        print(f"{key}: {value:.2f}")
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
