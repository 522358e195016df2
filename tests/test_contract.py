"""One contract for every command (issue 14), through the real CLI on a 2-CPU local Ray and tiny inputs:

* a step that keeps nothing still ends with its marker, stats.json and report.html (and a whole run too);
* `ingest` and `pack --format parquet` are steps like the others: marker, stats.json, report, a re-run skips,
  `--force` redoes;
* the input fingerprint sees an edit that keeps the file's size and mtime;
* one writer per run directory: a second one is refused with the first one's pid, host, start and command, and a
  killed holder (SIGKILL) leaves nothing stuck;
* what the user can fix is one line and exit 2 (config errors, a UserError inside a Ray task); a bug keeps its
  traceback and exits 1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from ray_jobs.cli import main as cli_main
from ray_jobs.config import load_config
from ray_jobs.steps import registry
from ray_jobs.steps.base import Stage
from ray_jobs.steps.registry import ROW, Step

QUIET = ["--set", "ray.progress_bars=false"]
# Each under clean.quality.min_words (50): clean keeps none of them.
SHORT = ["Hi there.", "Far too short.", "Nope."]


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def _stats(run: Path) -> dict:
    return json.loads((run / "stats.json").read_text())


def _marker(run: Path, step: str) -> dict:
    return json.loads((run / f"_SUCCESS.{step}").read_text())


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("ray-jobs: error")]


@pytest.mark.slow
def test_a_step_that_keeps_nothing_ends_with_its_marker_stats_and_report(ray_local, tmp_path):
    src = _jsonl(tmp_path / "short.jsonl", SHORT)
    out = tmp_path / "run"
    assert cli_main(["clean", "--input", str(src), "--output", str(out), *QUIET]) == 0
    clean = _stats(out)["stages"]["clean"]
    assert (clean["rows_in"], clean["rows_out"], sum(clean["dropped"].values())) == (3, 0, 3)
    assert _stats(out)["invariant_ok"] and _marker(out, "clean")["fingerprint"]
    kept = out / "clean" / "status=kept"
    assert kept.is_dir() and not list(kept.rglob("*.parquet"))  # empty, not missing: readers find no rows
    html = (out / "report.html").read_text()
    assert "are empty: every row was dropped" in html
    assert json.loads((out / "manifest.json").read_text())["rows"] == 0


@pytest.mark.slow
def test_a_run_whose_first_step_keeps_nothing_finishes_every_step(ray_local, tmp_path):
    src = _jsonl(tmp_path / "short.jsonl", SHORT)
    out = tmp_path / "run"
    sets = [f'input.paths=["{src}"]', "ray.progress_bars=false"]
    assert cli_main(["run", "--output", str(out), *[a for kv in sets for a in ("--set", kv)]]) == 0
    enabled = [s.name for s in registry.steps() if s.enabled(load_config(None, sets))]
    stats = _stats(out)
    assert list(stats["stages"]) == enabled and stats["invariant_ok"]
    assert all(s["rows_out"] == 0 for s in stats["stages"].values())
    assert all(_marker(out, name)["fingerprint"] for name in enabled)
    assert "are empty: every row was dropped" in (out / "report.html").read_text()


@pytest.mark.slow
def test_ingest_has_a_marker_stats_a_skipping_rerun_and_force(ray_local, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    manifest = tmp_path / "manifest.jsonl"
    lines = [{"id": "red", "modality": "image", "file": "red.png", "caption": "a red square"},
             {"id": "gone", "modality": "image", "file": "gone.png", "caption": "no such file"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "run"
    args = ["ingest", str(manifest), "--output", str(out), *QUIET]
    assert cli_main(args) == 0
    first = _marker(out, "ingest")
    ingest = _stats(out)["stages"]["ingest"]
    assert (ingest["rows_in"], ingest["rows_out"], ingest["quarantined"]) == (2, 1, 1) and ingest["invariant_ok"]
    assert (out / "report.html").is_file() and (out / "manifest.json").is_file()
    capsys.readouterr()
    assert cli_main(["stats", str(out)]) == 0 and "ingest" in capsys.readouterr().out
    assert cli_main(args) == 0 and _marker(out, "ingest") == first  # skipped
    # the kept rows' assets packed into Parquet shards: a step too, marker and skip
    pack = ["pack", "--input", str(out / "ingest" / "image" / "status=kept"), "--output", str(out), "--format",
            "parquet", *QUIET]
    assert cli_main(pack) == 0
    packed = _marker(out, "assets-parquet")
    assert list((out / "assets" / "parquet").glob("*.parquet")) and (out / "stats.json").is_file()
    assert cli_main(pack) == 0 and _marker(out, "assets-parquet") == packed
    assert cli_main([*args, "--force"]) == 0
    assert _marker(out, "ingest")["finished"] > first["finished"]
    # a changed manifest redoes it, also when nothing is kept
    manifest.write_text(json.dumps(lines[1]) + "\n")
    assert cli_main(args) == 0
    ingest = _stats(out)["stages"]["ingest"]
    assert (ingest["rows_in"], ingest["rows_out"], ingest["quarantined"]) == (1, 0, 1)


@pytest.mark.slow
def test_an_edit_that_keeps_size_and_mtime_redoes_the_step(ray_local, tmp_path):
    """rsync -t and cp -p keep the mtime; a same-size edit (a fixed typo) then differs only in content."""
    src = _jsonl(tmp_path / "in.jsonl", SHORT)
    out = tmp_path / "run"
    args = ["clean", "--input", str(src), "--output", str(out), *QUIET]
    assert cli_main(args) == 0
    first = _marker(out, "clean")
    assert cli_main(args) == 0 and _marker(out, "clean") == first  # unchanged: skipped
    st = src.stat()
    src.write_text(src.read_text().replace("Hi there.", "Ho there."))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert src.stat().st_size == st.st_size and src.stat().st_mtime_ns == st.st_mtime_ns
    assert cli_main(args) == 0
    assert _marker(out, "clean")["fingerprint"] != first["fingerprint"]
    texts = pads.dataset(str(out / "clean"), format="parquet").to_table(columns=["text"])["text"].to_pylist()
    assert "Ho there." in texts and "Hi there." not in texts


# Holds RUN's lock the way a running command does, until it is killed.
HOLDER = """
import sys, time
from ray_jobs.rundir import RunDir
with RunDir(sys.argv[1]).lock("ray-jobs run --output " + sys.argv[1]):
    print("holding", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_killed_holder_leaves_no_stuck_lock(ray_local, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", SHORT)
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        second = subprocess.run([sys.executable, "-m", "ray_jobs", "clean", "--input", str(src), "--output",
                                 str(out), *QUIET], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-3000:]
        [line] = _error_lines(second.stderr)
        assert f"pid {holder.pid} on {socket.gethostname()}" in line and f"ray-jobs run --output {out}" in line
        assert "Traceback" not in second.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert cli_main(["clean", "--input", str(src), "--output", str(out), *QUIET]) == 0
    assert (out / "_SUCCESS.clean").is_file()


@pytest.mark.parametrize("override, says", [
    ("ray.num_cpus=-1", "ray.num_cpus"),  # a ValueError of a section's own validation
    ("ray.num_cpus=two", "ray.num_cpus expects int"),  # a TypeError of the loader
    ("clean.nope=1", "unknown key(s) nope in [clean]"),
])
def test_config_errors_are_one_line_and_exit_2(override, says, capsys):
    assert cli_main(["plan", "--set", override]) == 2
    err = capsys.readouterr().err
    assert [says in line for line in _error_lines(err)] == [True] and "Traceback" not in err


@pytest.mark.slow
def test_a_user_error_inside_a_ray_task_is_one_line_and_exit_2(ray_local, tmp_path, capsys):
    src = _jsonl(tmp_path / "unlabelled.jsonl", SHORT)  # the labels step needs a `label` column
    assert cli_main(["labels", "--input", str(src), "--output", str(tmp_path / "run"), *QUIET]) == 2
    [line] = _error_lines(capsys.readouterr().err)
    assert line.startswith("ray-jobs: error: labels: the rows have no `label` column (found ['id', 'text'")
    assert line.endswith("set labels.label_column to the column that holds the labels")


class _Broken(Stage):
    """A programming error inside a Ray task: str + int."""

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.append_column("n", pa.array([table["text"][0].as_py() + 1] * len(table)))


@pytest.mark.slow
def test_a_bug_inside_a_ray_task_keeps_its_traceback_and_exits_1(ray_local, tmp_path, capsys):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers do not have tests/ on their path
    registry.register(Step(name="broken", section="clean", kind=ROW, doc="a step with a bug",
                           ops=lambda cfg: [_Broken()]), after="clean")
    try:
        src = _jsonl(tmp_path / "in.jsonl", SHORT)
        code = cli_main(["broken", "--input", str(src), "--output", str(tmp_path / "run"), *QUIET])
    finally:
        registry.unregister("broken")
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" in err and 'can only concatenate str (not "int") to str' in err
