"""`ray-jobs`: run the pipeline or one stage, read a run's stats, write its report, look at sample rows."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

from ray_jobs.config import RunConfig, load_config
from ray_jobs.errors import UserError, user_error
from ray_jobs.report.summary import cluster_members, format_cluster, format_rows, format_summary, sample_rows
from ray_jobs.rundir import RunDir
from ray_jobs.rundir.stats import run_stats
from ray_jobs.steps import registry

DEFAULT_JOB_API = "http://127.0.0.1:8265"  # the dashboard's job API, on loopback (cluster/local_cluster.py)
# Exit codes (README.md, "Exit codes"): 0 done; 1 a bug (traceback printed), a broken stats invariant, a failed
# submitted job; 2 what the user can fix (one line: expected, found, fix), argparse's usage errors included.
EXIT_OK, EXIT_BUG, EXIT_USER = 0, 1, 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set clean.quality.min_words=20 (repeatable)")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--force", action="store_true", help="redo stages that already finished")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ray-jobs", description=__doc__)
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("run", help="every enabled step, planned into few passes (default: the sample shards)")
    p.add_argument("config", nargs="?", help="TOML config (default: built-in defaults on shards/sample)")
    p.add_argument("--output", help="run directory (default: output.dir)")
    _common(p)
    p = sub.add_parser("plan", help="print the passes `ray-jobs run` would make of the enabled steps")
    p.add_argument("config", nargs="?", help="TOML config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    for step in registry.steps():
        stage = step.name
        p = sub.add_parser(stage, help=f"only the {stage} step on any readable input: {step.doc}")
        p.add_argument("--input", required=True, help="file, folder or glob (Parquet, JSONL, CSV, text, tar)")
        p.add_argument("--output", required=True, help="run directory to write the stage folder into")
        p.add_argument("--config", help="TOML config")
        if stage == "labels":
            p.add_argument("--text-column", help="column with the text (default: input.text_column, `text`)")
            p.add_argument("--label-column", help="column with the labels (default: labels.label_column, `label`)")
        if stage == "pack":
            p.add_argument("--format", default="tokens", choices=("tokens", "webdataset", "parquet"),
                           help="tokens: pack token rows into seq_len rows (the stage); webdataset / parquet: "
                                "ingested assets into shards under OUTPUT/assets/<format>/")
        _common(p)
    p = sub.add_parser("train", help="Ray Train workers on the token rows (train.data, or the pipeline run "
                                     "through pack first): metrics and checkpoints under OUTPUT/train")
    p.add_argument("config", nargs="?", help="TOML config (e.g. cluster/configs/train-tiny-cpu.toml)")
    p.add_argument("--output", help="run directory (default: output.dir); re-running resumes its checkpoint")
    _common(p)
    p = sub.add_parser("ingest", help="images, PDF pages (OCR where needed) and audio clips of a manifest as rows: "
                                      "OUTPUT/ingest/<modality>/status=*/")
    p.add_argument("manifest", help="JSONL manifest (id, modality, file, page, caption/transcription/"
                                    "instruction+response) or a COCO captions JSON")
    p.add_argument("--output", required=True, help="run directory")
    p.add_argument("--config", help="TOML config")
    _common(p)
    p = sub.add_parser("submit", help="`ray-jobs run` as a job on a Ray cluster (Ray's job API): streams the "
                                      "driver's log, exits 0 when the job succeeded")
    p.add_argument("config", nargs="?", help="TOML config (sent with the job; default: built-in defaults)")
    p.add_argument("--output", help="run directory on the cluster's shared storage (default: output.dir)")
    p.add_argument("--address", help="the cluster's job API (default: RAY_API_SERVER_ADDRESS, else "
                                     f"{DEFAULT_JOB_API}; reach a remote one through an SSH tunnel or port-forward)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="store_true", help="redo stages that already finished")
    p.add_argument("--with-code", action="store_true",
                   help="ship this checkout's ray_jobs package with the job (py_modules) instead of using the "
                        "version installed on the cluster")
    p = sub.add_parser("stats", help="recompute and print a run's stats from its files")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="print stats.json instead of the table")
    p = sub.add_parser("report", help="write RUN/report.html (dataset checklist, stats, plots) from a run's files")
    p.add_argument("run_dir")
    p = sub.add_parser("inspect", help="print sample rows of any output folder or Parquet file")
    p.add_argument("path")
    p.add_argument("--reason", help="only rows with this status (drop reason, kept, quarantined) or split")
    p.add_argument("-n", type=int, default=5)
    p.add_argument("--cluster", metavar="ID", help="with RUN/dedup: the members of near-dup cluster ID side by "
                                                   "side with their similarity ('largest' for the largest)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["ray-jobs", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _verb(args)
    except Exception as e:  # noqa: BLE001 - every error ends here: one line for the user's, a traceback for a bug
        if (user := user_error(e)) is not None:
            # its first line: a UserError is one line, and Ray Data appends its retry advice after a newline
            print(f"ray-jobs: error: {str(user).splitlines()[0]}", file=sys.stderr)
            return EXIT_USER
        traceback.print_exc()
        print(f"ray-jobs: internal error ({type(e).__name__}): the traceback above is a bug (in ray_jobs, or a "
              "failure of Ray or the machine), not something a setting fixes", file=sys.stderr)
        return EXIT_BUG


def _verb(args: argparse.Namespace) -> int:
    if args.verb == "stats":
        stats = run_stats(RunDir(args.run_dir))
        if not stats["stages"]:
            raise UserError(f"{args.run_dir} holds no finished stage (no _SUCCESS.<stage> marker); give the output "
                            "folder of a finished `ray-jobs run`, step or ingest")
        print(json.dumps(stats, indent=2) if args.json else format_summary(stats))
        return EXIT_OK if stats["invariant_ok"] else EXIT_BUG
    if args.verb == "report":
        from ray_jobs.report.html import write_report  # matplotlib: only for this verb

        print(f"report: {write_report(args.run_dir)}")
        return EXIT_OK
    if args.verb == "inspect" and args.cluster:
        print(format_cluster(*cluster_members(args.path, args.cluster)))
        return EXIT_OK
    if args.verb == "inspect":
        print(format_rows(sample_rows(args.path, args.reason, args.n)))
        return EXIT_OK
    if args.verb == "submit":
        return _submit(args)
    if args.verb == "plan":
        from ray_jobs.planner import describe

        print(describe(_config(args.config, args.overrides)))
        return EXIT_OK
    return _run(args)


def _config(path: str | None, overrides: list[str]) -> RunConfig:
    """load_config, whose every ValueError and TypeError is about the file or the --set values (a section's own
    checks in __post_init__, a wrong type in the loader): the user's to fix."""
    try:
        return load_config(path, overrides)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from e


def _submit(args: argparse.Namespace) -> int:
    """The config and overrides are checked here (a typo fails before anything is sent), then sent as they are:
    defaults and relative paths resolve on the cluster, where the project is installed."""
    from ray_jobs.runtime import jobs

    overrides = list(args.overrides) + ([f"output.dir={args.output}"] if args.output else [])
    _config(args.config, overrides)
    entry = ["python", "-m", "ray_jobs", "run"] + (["config.toml"] if args.config else [])
    entry += [a for o in overrides for a in ("--set", o)] + (["--force"] if args.force else [])
    address = args.address or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_JOB_API
    with tempfile.TemporaryDirectory(prefix="ray_jobs_submit_") as tmp:
        if args.config:
            shutil.copyfile(args.config, Path(tmp) / "config.toml")
        runtime_env: dict = {"working_dir": tmp}
        if args.with_code:
            runtime_env["py_modules"] = [str(Path(__file__).resolve().parent)]
        job_id, status = jobs.submit_job(address, shlex.join(entry), runtime_env,
                                           lambda chunk: print(chunk, end="", flush=True))
    print(f"\njob {job_id} at {address}: job status: {status}")
    return EXIT_OK if status == "SUCCEEDED" else EXIT_BUG


def _run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.address:
        overrides.append(f"ray.address={args.address}")
    if args.output:
        overrides.append(f"output.dir={args.output}")
    if getattr(args, "text_column", None):
        overrides.append(f"input.text_column={args.text_column}")
    if getattr(args, "label_column", None):
        overrides.append(f"labels.label_column={args.label_column}")
    cfg = _config(args.config, overrides)
    with RunDir(cfg.output.dir).lock(args.command):  # before Ray starts: a second writer is refused at once
        return _write(args, cfg)


def _write(args: argparse.Namespace, cfg: RunConfig) -> int:
    from ray_jobs.planner import run_pipeline  # imports Ray: keep `stats`/`inspect` fast

    if args.verb == "ingest":
        from ray_jobs.ingest.job import ingest

        for modality, counts in ingest(cfg, args.manifest, force=args.force).items():
            print(f"{modality:<6} " + "  ".join(f"{k}={v:,}" for k, v in counts.items()))
        return EXIT_OK
    if args.verb == "pack" and args.format != "tokens":
        from ray_jobs.ingest.job import pack_assets

        print(f"assets: {pack_assets(cfg, args.input, args.format, force=args.force)}")
        return EXIT_OK
    if args.verb == "train":
        from ray_jobs.train.job import train  # imports torch and transformers: only for this verb

        out = train(cfg)
        print(f"metrics: {out['metrics']}\nlatest checkpoint: {out['checkpoint']}")
        return EXIT_OK
    if args.verb == "run":
        stats = run_pipeline(cfg, force=args.force)
    else:
        input_cfg = dataclasses.replace(cfg.input, paths=(args.input,))
        stats = run_pipeline(cfg, stages=(args.verb,), force=args.force, input_cfg=input_cfg)
    print("\n" + format_summary(stats))
    return EXIT_OK
