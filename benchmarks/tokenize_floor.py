"""The tokenize floor: HF `tokenizers` as the tokenize step uses it against other BPE implementations fed the SAME
vocab.json + merges.txt, on the same texts and the same core, with an id-for-id equality check.

    python benchmarks/make_dedup_corpus.py --out benchmarks/out/tokfloor/100mb --size-mb 100
    .venv/bin/pip install tiktoken fastokens tokie          # measurement only; missing ones are skipped
    .venv/bin/python benchmarks/tokenize_floor.py                       # 20 MB timing x3 + 100 MB check
    .venv/bin/python benchmarks/tokenize_floor.py --time-mb 5 --reps 1 --check-mb 10   # quick
    .venv/bin/python benchmarks/tokenize_floor.py --no-check --time-mb 2 --time-sample-mb 1   # timing only
    .venv/bin/python benchmarks/tokenize_floor.py --probes --no-time ...   # + vocab/Unicode probes (slow: minutes)

What is measured. Texts: the `text` column of --corpus (Parquet from make_dedup_corpus.py: real books) followed by
the texts of --sample (shards/sample/parquet: multilingual, e-mails). Timing uses a fixed slice: the first
--time-mb MB of the corpus texts plus all sample texts; every configuration runs once per repetition, the
configurations interleaved (rep 1: A B C ..., rep 2: A B C ...), in this one process, and the median is kept.
"1 core" rows pin every thread of the process to one CPU (--cpu) whatever the library does inside, and report
MB/s of UTF-8 text per wall second; "2 threads" rows let the library use its thread pool on all CPUs, and report
wall MB/s and MB per CPU-second (process CPU time of all threads). Every implementation returns what the step
keeps: one int32 numpy array of ids per document (conversion included in the time).

Which row counts. The tokenize step runs one actor per core; on a 2-core machine with 2 workers each process has
one core, so the "1 core" rows (HF with TOKENIZERS_PARALLELISM=false) are the floor; a pool inside each process
only adds threads fighting for the same two cores. Its MB per CPU-second is the number that carries over.

Equality. Reference = HF `encode_batch_fast(texts, add_special_tokens=False)` with the tokenizer of
ray_jobs (`load_tokenizer`). Each implementation encodes the first --check-mb MB of the corpus (0 = all) plus the
sample, and the number of documents whose ids differ is counted; the first mismatch is shown. Two probes add
text the corpus may lack: every vocab token's own string, and every Unicode code point in a template that
exercises the pre-tokenizer regex classes (letters, digits, spaces, punctuation, contractions).

Implementations (fed the same vocab.json + merges.txt + tokenizer_config.json special tokens):
  hf            tokenizers.Tokenizer (baseline), encode_batch_fast and encode_batch, batch 64/256/1024/4096
  tiktoken      tiktoken.Encoding built from the byte-level vocab: rank = id (ids are in merge order), pattern =
                GPT-2 regex with digits split one by one (the "smollm" pre-tokenizer: Digits(individual) then
                ByteLevel), special tokens = tokenizer_config special_token_ids, encode_to_numpy(allowed_special=all)
  tiktoken+fb   the same, documents holding a char whose bytes have no token (HF drops such bytes silently,
                tiktoken cannot) go to HF: this is ray_jobs/tokenize/fast_bpe.py when it exists
  fastokens     fastokens.Tokenizer on the tokenizer.json that HF writes for the same tokenizer
  tokie         tokie.Tokenizer.from_json on that tokenizer.json
Not usable with a custom vocab (checked, see the report): rs-bpe and bpe-openai (OpenAI encodings only),
bpeasy (a trainer whose encoder is tiktoken).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ray_jobs.steps.tokenize.fast_bpe import _bytes_to_unicode  # GPT-2's byte <-> unicode table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOK = REPO / "ray_jobs" / "assets" / "smollm2_tokenizer"

# GPT-2 pre-tokenizer regex, with "\p{N}" one code point at a time (Digits(individual_digits=True) runs first and
# isolates every numeric char) and a run of spaces followed by a digit taken whole (HF sees it at the end of the
# segment the Digits split left, where "\s+(?!\S)" takes it all).
SMOLLM_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""


# ---------------------------------------------------------------------------------------------------- helpers
def set_affinity(cpus: set[int]) -> None:
    """Pin every thread of this process (library pools included) to `cpus`."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


def load_hf(tok_dir: Path):
    """The step's tokenizer: ray_jobs' own loader (wherever the refactor put it), else the same recipe here."""
    for mod in ("ray_jobs.steps.tokenize.tokenizer", "ray_jobs.tokenize.tokenizer"):
        try:
            return __import__(mod, fromlist=["load_tokenizer"]).load_tokenizer(str(tok_dir)), mod
        except ImportError:
            continue
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    tok = Tokenizer(BPE.from_file(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
    ids = set(cfg.get("special_token_ids", []))
    tok.add_special_tokens([t for t, i in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]) if i in ids])
    return tok, "local copy of _byte_level_bpe"


def read_texts(folder: Path, limit_bytes: int = 0) -> list[str]:
    out, n = [], 0
    for f in sorted(folder.glob("*.parquet")):
        for t in pq.read_table(f, columns=["text"]).column("text").to_pylist():
            t = t or ""
            out.append(t)
            n += len(t.encode())
            if limit_bytes and n >= limit_bytes:
                return out
    return out


def nbytes(texts: list[str]) -> int:
    return sum(len(t.encode()) for t in texts)


def batches(texts, bs):
    for i in range(0, len(texts), bs):
        yield texts[i:i + bs]


# ----------------------------------------------------------------------------------------------- implementations
def hf_runner(tok, method: str, bs: int, parallel: bool):
    fn = getattr(tok, method)

    def run(texts):
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if parallel else "false"
        out = []
        for b in batches(texts, bs):
            out.extend(np.asarray(e.ids, dtype=np.int32) for e in fn(b, add_special_tokens=False))
        return out
    return run


class TiktokenBPE:
    """tiktoken.Encoding that reproduces the HF byte-level BPE; `fallback` = HF tokenizer for risky documents."""

    def __init__(self, tok_dir: Path, fallback=None):
        import tiktoken
        vocab = json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8"))
        cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
        special_ids = set(cfg.get("special_token_ids", []))
        u2b = {c: b for b, c in _bytes_to_unicode().items()}
        special = {t: i for t, i in vocab.items() if i in special_ids}
        ranks = {bytes(u2b[c] for c in t): i for t, i in vocab.items() if i not in special_ids}
        merges = [ln.rstrip("\n") for ln in (tok_dir / "merges.txt").read_text(encoding="utf-8").splitlines()]
        merges = [m for m in merges if m and not m.startswith("#version")]
        res = [vocab[m.replace(" ", "")] for m in merges]
        assert all(a < b for a, b in zip(res, res[1:])), "merge results are not in id order: rank != id"
        # bytes with no token: HF drops them (no unk); tiktoken would panic -> give them out-of-vocab ranks, and
        # route documents holding them to HF (their neighbours may merge in HF once the byte is gone).
        self.missing = [b for b in range(256) if bytes([b]) not in ranks]
        top = max(vocab.values()) + 1
        for k, b in enumerate(self.missing):
            ranks[bytes([b])] = top + len(special) + k
        self.enc = tiktoken.Encoding("smollm2_from_vocab", pat_str=SMOLLM_PAT, mergeable_ranks=ranks,
                                     special_tokens=special)
        self.top = top
        chars = []
        for b in self.missing:
            if b < 0x80:
                chars.append(re.escape(chr(b)))
            elif 0xF0 <= b <= 0xF4:  # a 4-byte lead byte: the code points it starts
                lo = (b - 0xF0) << 18
                chars.append(f"{re.escape(chr(max(lo, 0x10000)))}-{re.escape(chr(min(lo + 0x3FFFF, 0x10FFFF)))}")
            # 0xC0, 0xC1, 0xF5-0xFF never occur in UTF-8; 0x80-0xBF continuation bytes always have tokens here
        # code points classed differently by HF (onig, Rust std) and tiktoken (regex tables); found with a probe
        chars += [f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ((0x11DE0, 0x11DE9), (0x16FF4, 0x16FF6))]
        self.risky = re.compile("[" + "".join(chars) + "]") if chars else None
        self.fallback = fallback

    def encode_one(self, t: str) -> np.ndarray:
        if self.risky is not None and self.risky.search(t):
            if self.fallback is None:
                a = self.enc.encode_to_numpy(t, allowed_special="all").astype(np.int32)
                return a[a < self.top]
            return np.asarray(self.fallback.encode(t, add_special_tokens=False).ids, dtype=np.int32)
        return self.enc.encode_to_numpy(t, allowed_special="all").view(np.int32)


def tiktoken_runner(enc: TiktokenBPE, parallel: bool):
    if not parallel:
        return lambda texts: [enc.encode_one(t) for t in texts]
    pool = ThreadPoolExecutor(os.cpu_count() or 2)
    return lambda texts: list(pool.map(enc.encode_one, texts, chunksize=64))


def fastokens_runner(ft, bs: int):
    def run(texts):
        out = []
        for b in batches(texts, bs):
            ids, offs = ft.encode_batch_flat(b)
            ids = np.frombuffer(ids, dtype=np.uint32).view(np.int32)
            offs = np.frombuffer(offs, dtype=np.uint64).astype(np.int64)
            out.extend(ids[offs[i]:offs[i + 1]] for i in range(len(b)))
        return out
    return run


def tokie_runner(tk, bs: int, parallel: bool):
    if not parallel:
        return lambda texts: [np.asarray(tk.encode(t, add_special_tokens=False).ids, dtype=np.int32) for t in texts]

    def run(texts):
        out = []
        for b in batches(texts, bs):
            out.extend(np.asarray(e.ids, dtype=np.int32) for e in tk.encode_batch(b, add_special_tokens=False))
        return out
    return run


# --------------------------------------------------------------------------------------------------------- main
def probe_texts(tok) -> list[str]:
    """Every vocab token's own text, and every code point in a template hitting each branch of the regex."""
    dec = [tok.decode([i]) for i in range(tok.get_vocab_size())]
    cps = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    tmpl = [f"a{c}b {c}{c}  {c}1 {c}'s x{c}. {c}\n" for c in cps]
    return dec + ["".join(tmpl[i:i + 64]) for i in range(0, len(tmpl), 64)]


def compare(name, out, ref, texts, tok, first: dict):
    bad = 0
    for i, (a, b) in enumerate(zip(out, ref)):
        if a.shape != b.shape or not np.array_equal(a, b):
            bad += 1
            if name not in first:
                k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
                s = max(0, k - 2)
                first[name] = (f"doc {i}: at id {k}: got {[tok.id_to_token(int(x)) for x in a[s:k + 3]]} "
                               f"want {[tok.id_to_token(int(x)) for x in b[s:k + 3]]}")
    return bad + abs(len(out) - len(ref))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=REPO / "benchmarks/out/tokfloor/100mb")
    ap.add_argument("--sample", type=Path, default=REPO / "shards/sample/parquet")
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOK)
    ap.add_argument("--time-mb", type=float, default=20.0, help="timing slice: corpus MB (+ all sample texts)")
    ap.add_argument("--time-sample-mb", type=float, default=0.0, help="timing slice: sample MB (0 = all)")
    ap.add_argument("--check-mb", type=float, default=0.0, help="equality check: corpus MB (0 = all) + sample")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-sizes", default="64,256,1024,4096")
    ap.add_argument("--alt-batch", type=int, default=1024, help="batch size of the other implementations")
    ap.add_argument("--cpu", type=int, default=None, help="the CPU of '1 core' rows (default: the last)")
    ap.add_argument("--impls", default="hf,tiktoken,tiktoken+fb,fastokens,tokie")
    ap.add_argument("--probes", action="store_true", help="also check the vocab and Unicode probes (slow)")
    ap.add_argument("--no-time", action="store_true")
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()

    all_cpus = set(os.sched_getaffinity(0))
    one = {args.cpu if args.cpu is not None else max(all_cpus)}
    impls = args.impls.split(",")
    tok, tok_src = load_hf(args.tokenizer)
    import tokenizers
    vers = {"tokenizers": tokenizers.__version__}

    alts = {}  # name -> {setting: runner}
    tmp = Path(tempfile.mkdtemp(prefix="tokfloor-"))
    tok.save(str(tmp / "tokenizer.json"))
    if "tiktoken" in impls or "tiktoken+fb" in impls:
        try:
            import tiktoken
            vers["tiktoken"] = tiktoken.__version__ if hasattr(tiktoken, "__version__") else "?"
            from importlib.metadata import version
            vers["tiktoken"] = version("tiktoken")
            if "tiktoken" in impls:
                e = TiktokenBPE(args.tokenizer)
                alts["tiktoken"] = {"1 core": tiktoken_runner(e, False), "2 threads": tiktoken_runner(e, True)}
            if "tiktoken+fb" in impls:
                e = TiktokenBPE(args.tokenizer, fallback=tok)
                alts["tiktoken+fb"] = {"1 core": tiktoken_runner(e, False), "2 threads": tiktoken_runner(e, True)}
                print(f"tiktoken: bytes without a token: {e.missing}; fallback regex {e.risky.pattern!r}")
        except ImportError:
            print("tiktoken: not installed, skipped")
    if "fastokens" in impls:
        try:
            from importlib.metadata import version

            import fastokens
            vers["fastokens"] = version("fastokens")
            os.environ["FASTOKENS_BPE_THREADS"] = "1"
            f1 = fastokens.Tokenizer.from_file(str(tmp / "tokenizer.json"))
            os.environ.pop("FASTOKENS_BPE_THREADS")
            f2 = fastokens.Tokenizer.from_file(str(tmp / "tokenizer.json"))
            alts["fastokens"] = {"1 core": fastokens_runner(f1, args.alt_batch),
                                 "2 threads": fastokens_runner(f2, args.alt_batch)}
        except ImportError:
            print("fastokens: not installed, skipped")
    if "tokie" in impls:
        try:
            from importlib.metadata import version

            import tokie
            vers["tokie"] = version("tokie")
            tk = tokie.Tokenizer.from_json(str(tmp / "tokenizer.json"))
            alts["tokie"] = {"1 core": tokie_runner(tk, args.alt_batch, False),
                             "2 threads": tokie_runner(tk, args.alt_batch, True)}
        except ImportError:
            print("tokie: not installed, skipped")

    # ---- equality check
    ident: dict[str, str] = {}
    if not args.no_check:
        corpus = read_texts(args.corpus, int(args.check_mb * 1e6))
        sample = read_texts(args.sample)
        sets = {"corpus": corpus, "sample": sample}
        if args.probes:
            sets["probes"] = probe_texts(tok)
        print(f"check: corpus {len(corpus)} docs {nbytes(corpus) / 1e6:.1f} MB, sample {len(sample)} docs "
              f"{nbytes(sample) / 1e6:.1f} MB" + ("" if not args.probes else f", probes {len(sets['probes'])} texts"))
        set_affinity(all_cpus)
        first: dict[str, str] = {}
        bad = {n: {} for n in alts}
        for sname, texts in sets.items():
            t0 = time.perf_counter()
            ref = hf_runner(tok, "encode_batch_fast", 1024, True)(texts)
            print(f"  {sname}: HF reference {time.perf_counter() - t0:.1f} s")
            bad.setdefault("hf encode_batch", {})[sname] = compare(
                "hf encode_batch", hf_runner(tok, "encode_batch", 1024, True)(texts), ref, texts, tok, first)
            for n, runs in alts.items():
                t0 = time.perf_counter()
                bad[n][sname] = compare(n, runs["2 threads"](texts), ref, texts, tok, first)
                print(f"  {sname}: {n}: {bad[n][sname]} mismatching docs ({time.perf_counter() - t0:.1f} s)")
            del ref
            gc.collect()
        for n, d in bad.items():
            tot = sum(d.values())
            ident[n] = "yes" if tot == 0 else f"no: {tot} (" + ", ".join(f"{k} {v}" for k, v in d.items() if v) + ")"
        for n, msg in first.items():
            print(f"  first mismatch {n}: {msg}")
        del corpus, sets
        gc.collect()

    # ---- timing
    if args.no_time:
        return
    texts = read_texts(args.corpus, int(args.time_mb * 1e6)) + read_texts(args.sample, int(args.time_sample_mb * 1e6))
    nb = nbytes(texts)
    print(f"timing: {len(texts)} docs, {nb / 1e6:.1f} MB, {args.reps} reps interleaved; 1 core = CPU {sorted(one)}")
    configs = []
    for meth in ("encode_batch_fast", "encode_batch"):
        for bs in [int(x) for x in args.batch_sizes.split(",")]:
            for par in (False, True):
                configs.append((f"hf {meth}", f"b{bs} " + ("PARALLELISM=true" if par else "PARALLELISM=false"),
                                par, hf_runner(tok, meth, bs, par)))
    for n, runs in alts.items():
        for setting, fn in runs.items():
            configs.append((n, setting + (f" b{args.alt_batch}" if n != "tiktoken" else ""),
                            setting != "1 core", fn))
    res = {i: [] for i in range(len(configs))}
    for r in range(args.reps):
        for i, (name, setting, par, fn) in enumerate(configs):
            set_affinity(all_cpus if par else one)
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            fn(texts)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            res[i].append((wall, cpu))
        print(f"  rep {r + 1}/{args.reps} done")
    set_affinity(all_cpus)

    base_i = next(i for i, c in enumerate(configs) if c[0] == "hf encode_batch_fast" and c[1].startswith(
        "b1024 PARALLELISM=false"))
    base = nb / statistics.median(w for w, _ in res[base_i])
    print(f"\nbaseline = hf encode_batch_fast b1024 PARALLELISM=false: {base / 1e6:.2f} MB/s")
    print(f"{'implementation':<24}{'setting':<30}{'MB/s wall':>10}{'MB/CPU-s':>10}{'ratio':>7}  identical ids")
    for i, (name, setting, par, _) in enumerate(configs):
        wall = statistics.median(w for w, _ in res[i])
        cpu = statistics.median(c for _, c in res[i])
        key = "hf encode_batch" if name == "hf encode_batch" else (name if name in ident else None)
        same = "reference" if name == "hf encode_batch_fast" else ident.get(key, "not checked")
        print(f"{name:<24}{setting:<30}{nb / wall / 1e6:>10.2f}{nb / cpu / 1e6:>10.2f}{nb / wall / base:>7.2f}  {same}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + f"; HF tokenizer from {tok_src}")


if __name__ == "__main__":
    sys.exit(main())
