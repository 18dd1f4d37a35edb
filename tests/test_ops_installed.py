"""The rules, dashboards and deploy generators from the installed wheel, for a service named on
the command line or in a YAML file, with no checkout in sight.

The package is built into a wheel from a copy of the source, installed with the dashboards
extra into a fresh virtual environment outside the repository (its dependencies from the
configured index), and ``aiobs`` runs in a temporary directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
JOB, NAMESPACE = "my-llm", "prod"
DEMO_NAMES = ("aiobs-demo", 'job="aiobs"')
"""What would show the demo's defaults leaked into a service's output."""

# Everything about the service, once as options and once as the keys of one YAML file.
RULES_OPTIONS = ["--job", JOB, "--namespace", NAMESPACE, "--label", "cluster=eu1",
                 "--slo-target", "0.999", "--latency-threshold-seconds", "1.0"]  # fmt: skip
DASHBOARDS_OPTIONS = ["--datasource", "Mimir", "--title-prefix", "My LLM",
                      "--uid-prefix", "my-llm", "--tag", "my-llm"]  # fmt: skip
DEPLOY_OPTIONS = ["--rule-label", "release=kps", "--dashboard-folder", "LLM"]
CONFIG = {
    "job": JOB,
    "namespace": NAMESPACE,
    "labels": {"cluster": "eu1"},
    "slo_target": 0.999,
    "latency_threshold_seconds": 1.0,
    "datasource": "Mimir",
    "title_prefix": "My LLM",
    "uid_prefix": "my-llm",
    "tags": ["my-llm"],
    "rule_labels": {"release": "kps"},
    "dashboard_folder": "LLM",
}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def aiobs_command(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``aiobs`` script of a fresh venv holding the wheel built from this source."""
    work = tmp_path_factory.mktemp("installed")
    source = work / "source"
    shutil.copytree(ROOT / "aiobs", source / "aiobs", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = work / "wheels"
    _check([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(source)])
    [wheel] = wheels.glob("aiobs-*.whl")
    venv = work / "venv"
    _check([sys.executable, "-m", "venv", str(venv)])
    _check([str(venv / "bin" / "python"), "-m", "pip", "install", f"{wheel}[dashboards]"])
    where = _aiobs(venv / "bin" / "python", "-c", "import aiobs; print(aiobs.__file__)", cwd=work)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    return venv / "bin" / "aiobs"


def _check(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _aiobs(program: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # no PYTHONPATH: only the venv's copy of aiobs is importable
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return subprocess.run(
        [str(program), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def _run(aiobs: Path, cwd: Path, *args: str) -> None:
    result = _aiobs(aiobs, *args, cwd=cwd)
    assert result.returncode == 0, f"aiobs {' '.join(args)}: {result.stderr}"


def _outputs(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): path.read_text(encoding="utf-8")
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != "service.yaml"
    }


def _generate_everything(
    aiobs: Path, cwd: Path, rules: list[str], dashboards: list[str], deploy: list[str]
) -> dict[str, str]:
    """What export and the three generate commands write in ``cwd``, each with its settings."""
    _run(aiobs, cwd, "rules", "export", *rules, "--out", "rules.yml")
    _run(aiobs, cwd, "rules", "generate", "--dir", "alerts", *rules)
    _run(aiobs, cwd, "dashboards", "generate", "--out", "dashboards", *dashboards)
    _run(aiobs, cwd, "deploy", "generate", "--dir", "k8s", *deploy)
    return _outputs(cwd)


def test_options_and_yaml_file_name_the_service_everywhere(
    aiobs_command: Path, tmp_path: Path
) -> None:
    """The options route and the ``--config`` route write the same files; they select the
    service's job and namespace, carry none of the demo's names, and the rules pass promtool;
    ``check`` with the same settings passes on them."""
    by_options, by_file = tmp_path / "options", tmp_path / "file"
    by_options.mkdir()
    by_file.mkdir()
    (by_file / "service.yaml").write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    selector = RULES_OPTIONS[:6]  # job, namespace and label: what the dashboards take too
    written = _generate_everything(
        aiobs_command,
        by_options,
        RULES_OPTIONS,
        [*selector, *DASHBOARDS_OPTIONS],
        [*RULES_OPTIONS, *DASHBOARDS_OPTIONS, *DEPLOY_OPTIONS],
    )
    from_file = ["--config", "service.yaml"]
    assert _generate_everything(aiobs_command, by_file, from_file, from_file, from_file) == written

    assert sorted(name.split("/")[0] for name in written) == sorted(
        ["rules.yml"] + ["alerts"] * 8 + ["dashboards"] * 4 + ["k8s"] * 2
    )
    for name, text in written.items():
        assert not [demo for demo in DEMO_NAMES if demo in text], name
    rules_text = [text for name, text in written.items() if name.endswith(".yml")]
    for text in rules_text:
        assert f'job="{JOB}",namespace="{NAMESPACE}",cluster="eu1"' in text
    assert "> 0.0144" in written["rules.yml"]  # 14.4 x (1 - 0.999)
    assert 'le="1.0"' in written["alerts/latency.yml"]

    dashboards = {
        name: json.loads(text) for name, text in written.items() if name.startswith("dashboards/")
    }
    assert sorted(dashboards) == [
        "dashboards/my-llm-gpu.json",
        "dashboards/my-llm-inference.json",
        "dashboards/my-llm-service-overview.json",
        "dashboards/my-llm-telemetry-health.json",
    ]
    for name, dashboard in dashboards.items():
        assert dashboard["uid"] == name.removeprefix("dashboards/").removesuffix(".json")
        assert dashboard["title"].startswith("My LLM / ")
        assert dashboard["tags"] == ["my-llm"]
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["job"]["current"]["value"] == JOB
        assert variables["datasource"]["current"]["value"] == "Mimir"
        assert variables["job"]["query"] == (
            f'label_values(ai_service_ready{{namespace="{NAMESPACE}", cluster="eu1"}}, job)'
        )
        text = written[name]
        assert text.count('job=~\\"$job\\"') == text.count(
            f'job=~\\"$job\\", namespace=\\"{NAMESPACE}\\", cluster=\\"eu1\\"'
        ) > 0

    objects = [
        document
        for name in ("k8s/prometheusrule.yaml", "k8s/grafana-dashboards.yaml")
        for document in yaml.safe_load_all(written[name])
    ]
    assert [o["kind"] for o in objects] == ["PrometheusRule"] + ["ConfigMap"] * 4
    for document in objects:
        assert document["metadata"]["namespace"] == NAMESPACE
        assert document["metadata"]["labels"]["app.kubernetes.io/name"] == JOB
    rule, *maps = objects
    assert rule["metadata"]["name"] == f"{JOB}-rules"
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert [g["name"] for g in rule["spec"]["groups"]] == [
        g["name"] for g in yaml.safe_load(written["rules.yml"])["groups"]
    ]
    assert {name for m in maps for name in m["data"]} == {
        name.removeprefix("dashboards/") for name in dashboards
    }
    assert {m["metadata"]["annotations"]["grafana_folder"] for m in maps} == {"LLM"}

    for command, where in (("rules", "--dir"), ("dashboards", "--dir"), ("deploy", "--dir")):
        folder = {"rules": "alerts", "dashboards": "dashboards", "deploy": "k8s"}[command]
        _run(aiobs_command, by_file, command, "check", where, folder, "--config", "service.yaml")
        stale = _aiobs(aiobs_command, command, "check", where, folder, cwd=by_file)
        assert stale.returncode == 1, f"{command} check with the demo's defaults passed"

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (CI installs it: scripts/bootstrap)")
    rule_files = [by_options / name for name in written if name.endswith(".yml")]
    result = subprocess.run(
        [promtool, "check", "rules", *map(str, rule_files)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_without_options_the_wheel_writes_the_repositorys_files(
    aiobs_command: Path, tmp_path: Path
) -> None:
    """With no option, the installed commands write exactly the checked-in demo files."""
    _run(aiobs_command, tmp_path, "rules", "generate", "--dir", "alerts")
    _run(aiobs_command, tmp_path, "dashboards", "generate", "--out", "dashboards")
    _run(aiobs_command, tmp_path, "deploy", "generate", "--dir", "k8s")
    written = _outputs(tmp_path)
    checked_in = {
        **{f"alerts/{p.name}": p for p in (ROOT / "alerts").glob("*.yml")},
        **{f"dashboards/{p.name}": p for p in (ROOT / "dashboards").glob("*.json")},
        **{
            f"k8s/{name}": ROOT / "deploy/k8s/base" / name
            for name in ("prometheusrule.yaml", "grafana-dashboards.yaml")
        },
    }
    assert sorted(written) == sorted(checked_in)
    for name, path in checked_in.items():
        assert written[name] == path.read_text(encoding="utf-8"), name


@pytest.mark.parametrize(
    ("args", "config", "named"),
    [
        (["rules", "export", "--slo-target", "1.5"], None, "--slo-target"),
        (["rules", "export", "--gpu-memory-ratio", "lots"], None, "--gpu-memory-ratio"),
        (["dashboards", "generate", "--out", "d", "--uid-prefix", "a b"], None, "--uid-prefix"),
        (["deploy", "generate", "--dir", "k", "--label", "cluster"], None, "--label"),
        (["deploy", "generate", "--dir", "k", "--namespace", "Prod_1"], None, "--namespace"),
        (["rules", "export"], "slo_targt: 0.99\n", "slo_targt"),
        (["dashboards", "generate", "--out", "d"], "namespace: Prod_1\n", "'namespace'"),
        (["deploy", "generate", "--dir", "k"], "labels: [cluster]\n", "'labels'"),
        (["rules", "generate", "--dir", "a"], "ttft_threshold_seconds: 0.33\n", "ttft_threshold"),
        (["rules", "export"], "- job\n", "mapping"),
    ],
)
def test_a_bad_option_or_key_exits_2_naming_it(
    aiobs_command: Path, tmp_path: Path, args: list[str], config: str | None, named: str
) -> None:
    """A bad value or unknown key: exit status 2, a message naming it, no traceback and no
    file written."""
    if config is not None:
        (tmp_path / "bad.yaml").write_text(config, encoding="utf-8")
        args = [*args, "--config", "bad.yaml"]
    result = _aiobs(aiobs_command, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == (["bad.yaml"] if config else [])
