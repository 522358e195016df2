"""url_filter and quality_model: rows/s on one core, against the clean step on the same rows in the same run, and
url_filter's memory and setup time with a block list of UT1 `adult`'s size (~4.6 M domains).

    python benchmarks/url_quality_bench.py [--domains 4600000] [--substrings 0,10000] [--repeat 5]

No UT1 list ships here and nothing is downloaded: the domain list is synthetic (random labels of 5-15 characters
under 8 TLDs, seeded), written in UT1's layout (<tmp>/adult/domains, <tmp>/adult/urls). The rows are the sample
corpus (shards/sample/parquet, 1,567 documents), each given a URL cycled from the 20 real Common Crawl URLs of
tests/fixtures/web_cc, 6 of the 20 under a listed domain. The quality model is a fastText model trained here on
the sample (dim 16, word bigrams, as tests/test_quality_model.py): a real DCLM model (dim 256, 1 GB) costs more
per row. One process, so rows/s is per core.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ray_jobs import schema  # noqa: E402
from ray_jobs.steps.clean.config import CleanConfig  # noqa: E402
from ray_jobs.steps.clean.ops import CleanStage  # noqa: E402
from ray_jobs.steps.quality_model.config import QualityModelConfig  # noqa: E402
from ray_jobs.steps.quality_model.ops import QualityModelStage  # noqa: E402
from ray_jobs.steps.url_filter.config import UrlFilterConfig  # noqa: E402
from ray_jobs.steps.url_filter.ops import UrlFilterStage  # noqa: E402

WEB_CC = REPO / "tests" / "fixtures" / "web_cc"
SAMPLE = REPO / "shards" / "sample" / "parquet"


def write_ut1(root: Path, n_domains: int, n_substrings: int, real_hosts: list[str]) -> Path:
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789-"))
    lens = rng.integers(5, 16, n_domains)
    chars = "".join(letters[rng.integers(0, 36, int(lens.sum()))].tolist())
    ends = np.cumsum(lens)
    tlds = ("com", "net", "org", "de", "fr", "ru", "info", "xyz")
    folder = root / "adult"
    folder.mkdir(parents=True)
    with open(folder / "domains", "w") as f:
        f.write("\n".join(real_hosts) + "\n")  # the real hosts the rows should find among the synthetic ones
        for i in range(n_domains - len(real_hosts)):
            f.write(f"{chars[ends[i] - lens[i]:ends[i]]}.{tlds[i % 8]}\n")
    with open(folder / "urls", "w") as f:
        for i in range(n_substrings):
            f.write(f"{chars[ends[i] - lens[i]:ends[i]]}.{tlds[i % 8]}/{i}/\n")
    return root


def cc_urls() -> list[str]:
    urls = []
    for f in sorted(WEB_CC.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            urls += [json.loads(line)["id"] for line in fh]
    return urls


def setup_cost(lists: str) -> tuple[float, float, float]:
    """In a fresh process: url_filter's setup time, its RSS growth and the process's peak RSS (MB)."""
    import resource

    proc = psutil.Process()
    stage = UrlFilterStage(UrlFilterConfig(lists=(lists,)))
    before = proc.memory_info().rss
    t0 = time.perf_counter()
    stage.setup()
    took = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return took, (proc.memory_info().rss - before) / 2**20, peak


def per_core(stage, table: pa.Table, repeat: int, batch: int = 1024) -> tuple[float, pa.Table]:
    """Best of `repeat` passes over the rows in `batch`-row slices, as rows per second (one process)."""
    best, out = float("inf"), table
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = pa.concat_tables([stage(table.slice(i, batch)) for i in range(0, len(table), batch)])
        best = min(best, time.perf_counter() - t0)
    return len(table) / best, out


def train_model(rows: pa.Table, path: Path) -> Path:
    import fasttext

    labels = {"book": "__label__hq", "spam": "__label__lq"}
    lines = [f"{labels[lab]} {' '.join((t or '')[:2000].split())}\n"
             for t, lab in zip(rows[schema.TEXT].to_pylist(), rows["label"].to_pylist()) if lab in labels]
    train = path.with_suffix(".txt")
    train.write_text("".join(lines))
    fasttext.train_supervised(str(train), epoch=10, lr=0.5, dim=16, wordNgrams=2, minCount=1, thread=1,
                              verbose=0).save_model(str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domains", type=int, default=4_600_000)
    ap.add_argument("--substrings", default="0,10000", help="URL-substring list sizes to time (comma-separated)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    rows = pq.read_table(SAMPLE, columns=[schema.ID, schema.TEXT, schema.SOURCE, "label"])
    urls = cc_urls()
    rows = rows.append_column("url", pa.array([urls[i % len(urls)] for i in range(len(rows))]))
    rows = rows.append_column(schema.ERROR, pa.nulls(len(rows), pa.string()))  # what the readers give
    # 6 of the 20 real URLs are listed: 100kinvesting, getty's archive, the 4 blogspot pages (one parent domain)
    listed = ["100kinvesting.com", "archives2.getty.edu", "blogspot.com"]
    with tempfile.TemporaryDirectory() as tmp:
        ut1 = write_ut1(Path(tmp) / "ut1", args.domains, max(int(s) for s in args.substrings.split(",")), listed)
        clean_rps, cleaned = per_core(CleanStage(CleanConfig()), rows, args.repeat)
        print(f"rows: {len(rows):,} (sample corpus); clean: {clean_rps:,.0f} rows/s per core")
        for n_sub in (int(s) for s in args.substrings.split(",")):
            sub_root = Path(tmp) / f"ut1_{n_sub}"
            (sub_root / "adult").mkdir(parents=True)
            (sub_root / "adult" / "domains").symlink_to(ut1 / "adult" / "domains")
            with open(ut1 / "adult" / "urls") as src, open(sub_root / "adult" / "urls", "w") as dst:
                dst.writelines(line for _, line in zip(range(n_sub), src))
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                setup_s, grown, peak = pool.apply(setup_cost, (str(sub_root),))
            stage = UrlFilterStage(UrlFilterConfig(lists=(str(sub_root),)))
            stage.setup()
            rps, out = per_core(stage, rows, args.repeat)
            blocked = int(pc.sum(pc.equal(out[schema.STATUS], "url_blocked")).as_py())
            print(f"url_filter, {len(stage._lists.domain_index):,} domains + {n_sub:,} URL substrings: setup "
                  f"{setup_s:.1f} s, RSS +{grown:,.0f} MB after it (peak {peak:,.0f} MB in a fresh process); "
                  f"{rps:,.0f} rows/s per core = {rps / clean_rps:.0f}x clean's; blocked {blocked:,}")
            del stage
        model = train_model(rows, Path(tmp) / "hq.bin")
        kept = cleaned.filter(pc.equal(cleaned[schema.STATUS], schema.KEPT))
        stage = QualityModelStage(QualityModelConfig(model=str(model)))
        stage.setup()
        rps, _ = per_core(stage, kept, args.repeat)
        mb = pc.sum(pc.binary_length(pc.cast(kept[schema.TEXT], pa.binary()))).as_py() / 2**20
        print(f"quality_model (fastText dim 16, bigrams, max_chars 10,000) on clean's {len(kept):,} kept rows "
              f"({mb:.1f} MB): {rps:,.0f} rows/s per core = {rps / clean_rps:.1f}x clean's rows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
