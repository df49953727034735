"""The benchmark runner, report and planning benchmark's logic, without Docker and
without measuring anything (benchmarks/; `make bench` runs them for real)."""

import json

import pytest

from benchmarks import __main__ as runner
from benchmarks import bench_planning, registry, report, stats
from components.plan.errors import ConfigError
from components.tools.render import plan_for
from components.plan.settings import MAX_WORKERS_PER_CLASS
from components.plan.workers import CLASS_NAMES

MACHINE = {"cores": 2, "memory_gib": 23.5, "cpu_model": "Test CPU", "kernel": "6.1.0",
           "docker_server": "20.10.24", "python": "3.11.7", "synapse_version": "1.163.2",
           "synapse_image": "matrixdotorg/synapse:v1.163.2", "git_revision": "abc123",
           "date": "2026-11-27 17:00:00 UTC"}


# --- stats ---------------------------------------------------------------------------

def test_summary_is_min_median_max_whatever_the_order():
    assert stats.summary([3.0, 1.0, 2.0]) == {"n": 3, "min": 1.0, "median": 2.0, "max": 3.0}
    assert stats.summary([4, 1, 3, 2])["median"] == 2.5


def test_percentiles_interpolate_between_ranks():
    values = list(range(1, 101))  # 1..100
    assert stats.percentile(values, 0) == 1 and stats.percentile(values, 100) == 100
    assert stats.percentile(values, 95) == pytest.approx(95.05)
    assert stats.percentile([10, 20], 25) == pytest.approx(12.5)
    lat = stats.latency_summary([5, 1, 3, 2, 4])
    assert (lat["p50"], lat["min"], lat["max"]) == (3, 1, 5)


@pytest.mark.parametrize("values,p", [([], 50), ([1.0], 101), ([1.0, float("nan")], 50)])
def test_stats_refuse_what_has_no_percentile(values, p):
    with pytest.raises(ValueError):
        stats.percentile(values, p)


# --- runner --------------------------------------------------------------------------

def test_runner_refuses_an_unknown_benchmark(capsys):
    with pytest.raises(SystemExit) as exit_:
        runner.parse_args(["--only", "planing"])
    assert exit_.value.code == 2
    assert "invalid choice: 'planing'" in capsys.readouterr().err


def test_runner_keeps_the_report_order_whatever_only_says():
    assert runner.selected(["serving", "planning"]) == ["planning", "serving"]
    assert runner.selected(None) == list(registry.ORDER)


def test_registry_refuses_a_name_outside_the_contract():
    with pytest.raises(ValueError):
        registry.load("bench_program")


# --- report --------------------------------------------------------------------------

class FakeModule:
    NAME = "deploy"
    TITLE = "Deploy time"

    @staticmethod
    def markdown(result, plots):
        return f"seconds: {result['seconds']}; plots: {', '.join(plots)}"

    @staticmethod
    def plots(result, outdir):
        path = outdir / "deploy_fake.png"
        path.write_bytes(b"png")
        return [path]


def test_report_says_which_sections_are_not_run_yet(tmp_path, monkeypatch):
    monkeypatch.setattr(report.machine, "collect", lambda: MACHINE)
    text = report.render(results=tmp_path / "results", plots_dir=tmp_path / "plots")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Planning cost", "## Deploy time", "## Change cost", "## Serving",
                        "## Federation", "## Backup and restore", "## Swarm bed"]
    for name in registry.ORDER:
        assert f"Not run yet: `make bench` (or `.venv/bin/python -m benchmarks --only {name}`)" \
            in text
    assert "**cores** 2, **memory** 23.5 GiB, **CPU** Test CPU" in text
    assert "**Docker server** 20.10.24" in text and "**Synapse** 1.163.2" in text


def test_report_renders_a_results_file_with_its_plots_and_flags_quick_runs(tmp_path,
                                                                          monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    (results / "deploy.json").write_text(json.dumps(
        {"name": "deploy", "title": "Deploy time", "quick": True, "machine": MACHINE,
         "seconds": 12.5, "result": {"seconds": 42}}))
    real_load = registry.load
    monkeypatch.setattr(registry, "load",
                        lambda name: FakeModule if name == "deploy" else real_load(name))
    text = report.render(results=results, plots_dir=tmp_path / "plots")
    deploy = text.split("## Deploy time")[1].split("## ")[0]
    assert "seconds: 42" in deploy and "**quick mode**" in deploy
    assert str(tmp_path / "plots" / "deploy_fake.png") in deploy
    assert "Not run yet" not in deploy
    assert "Not run yet" in text.split("## Change cost")[1]
    assert "**date** 2026-11-27 17:00:00 UTC" in text  # the head names the results' machine


# --- planning benchmark --------------------------------------------------------------

def test_processes_are_spread_over_every_class_up_to_the_largest():
    assert sum(bench_planning.distribute(10).values()) == 9
    fifty = bench_planning.distribute(50).values()
    assert sum(fifty) == 49 and max(fifty) - min(fifty) <= 1
    largest = bench_planning.distribute(bench_planning.LARGEST)
    assert largest == {c: MAX_WORKERS_PER_CLASS for c in CLASS_NAMES}
    with pytest.raises(ValueError):
        bench_planning.distribute(bench_planning.LARGEST + 1)


def test_every_benchmarked_stack_file_is_accepted_and_needs_its_raised_max_connections(tmp_path):
    for processes in bench_planning.COUNTS:
        plan = plan_for(bench_planning.write_stack(tmp_path, processes))
        assert len(plan.processes) == processes
    # Without the raise, Postgres' default capacity refuses the largest count.
    config = bench_planning.stack_config(bench_planning.LARGEST)
    del config["config"]["synapse:postgres"]
    path = tmp_path / "Pulumi.bench-refused.yaml"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="max_connections >= 3870"):
        plan_for(path)


def _size(processes, program, bare, cli=1.0, inproc=0.5):
    def measure(median):
        return {"seconds": {"n": 3, "min": median * 0.9, "median": median, "max": median * 1.1},
                "max_rss_mib": {"n": 3, "min": 60.0, "median": 60.0, "max": 61.0}}
    return {"processes": processes, "containers": processes + 4, "resources": 2 * processes,
            "files": 9 * processes, "repeats": 3,
            "program": measure(program), "bare": measure(bare),
            "render_cli": measure(cli), "render_inproc": measure(inproc)}


def test_planning_markdown_computes_the_overhead_ratio_and_growth_from_the_figures():
    result = {"largest": 385, "largest_reason": "because",
              "measures": [[m, bench_planning.LABELS[m]] for m in bench_planning.MEASURES],
              "sizes": [_size(10, program=0.4, bare=0.1), _size(100, program=40.0, bare=2.0)]}
    text = bench_planning.markdown(result, ["benchmarks/plots/planning_time.png"])
    program_table = text.split("### Pulumi program under mocks")[1].split("###")[0]
    assert "| 10 | 14 | 20 | 0.360 | 0.400 | 0.440 | 4.0 |" in program_table
    assert "| 100 | 104 | 200 | 36.000 | 40.000 | 44.000 | 20.0 |" in program_table
    assert "costs 4.0x to 20.0x" in text
    assert "growth exponent 2.00, about quadratic" in text  # 100x time for 10x processes
    assert "![planning_time](benchmarks/plots/planning_time.png)" in text


def test_growth_exponent():
    assert bench_planning.growth_exponent(10, 1, 100, 10) == pytest.approx(1)
    assert bench_planning.growth_exponent(10, 1, 20, 4) == pytest.approx(2)


# --- make bench ----------------------------------------------------------------------

def test_make_bench_installs_its_requirements_and_is_not_part_of_make_test():
    import subprocess

    def dry(target):
        run = subprocess.run(["make", "--no-print-directory", "-n", "-W", "requirements-bench.txt",
                              target], capture_output=True, text=True, cwd=registry.ROOT)
        assert run.returncode == 0, run.stderr
        return run.stdout

    bench = dry("bench")
    assert "pip install -q -r requirements-bench.txt" in bench
    assert bench.rstrip().splitlines()[-1] == ".venv/bin/python -m benchmarks"
    assert "benchmarks" not in dry("test")
    assert (registry.ROOT / "requirements-bench.txt").read_text().splitlines()[1] \
        == "-r requirements-dev.txt"
    readme = (registry.ROOT / "README.md").read_text()
    assert "| `make bench`" in readme and "## Benchmarks" in readme


def test_federation_report_gives_each_destination_and_class_per_preset():
    from benchmarks import bench_federation as bf

    def lat(p50):
        return {"n": 10, "min": p50 / 2, "p50": p50, "p95": p50 * 2, "p99": p50 * 3,
                "max": p50 * 4, "lost": 0}

    result = {"seconds": 60, "presets": {
        "specialized": {"latency_s": {"B": lat(0.1), "C": lat(0.2), "D": {**lat(0.3), "lost": 2}},
                        "cores_by_class": {"sender": 0.25, "main": 0.1, "nginx": 0.05}},
        "monolith": {"latency_s": {"B": lat(0.05), "C": lat(0.06), "D": lat(0.07)},
                     "cores_by_class": {"main": 0.3, "nginx": 0.04}},
    }}
    text = bf.markdown(result, [])
    assert "| specialized | 100 / 200 / 300 | 200 / 400 / 600 | 300 / 600 / 900 | 2 | 0.35 |" in text
    assert "| monolith | 50 / 100 / 150 | 60 / 120 / 180 | 70 / 140 / 210 | 0 | 0.30 |" in text
    assert "| sender | 0.250 | 0.000 |" in text  # a class the monolith lacks reads 0


def test_backup_report_gives_a_row_per_size():
    from benchmarks import bench_backup as bb

    result = {"sizes": [
        {"db_padding_mb": 0, "media_mb": 10, "database_bytes": 12 << 20, "backup_s": 1.5,
         "backup_parts_s": {"database": 0.4, "media": 0.3, "total": 1.2}, "restore_s": 3.25,
         "dump_bytes": 1 << 20, "media_tar_bytes": 10 << 20, "backup_bytes": 11 << 20},
        {"db_padding_mb": 100, "media_mb": 100, "database_bytes": 112 << 20, "backup_s": 9.0,
         "backup_parts_s": {"database": 5.0, "media": 3.0, "total": 8.5}, "restore_s": 12.0,
         "dump_bytes": 100 << 20, "media_tar_bytes": 100 << 20, "backup_bytes": 201 << 20}]}
    text = bb.markdown(result, [])
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert rows == ["| 12 | 10 | 1.5 | 0.4 / 0.3 | 11 | 3.2 |",
                    "| 112 | 100 | 9.0 | 5.0 / 3.0 | 201 | 12.0 |"]
