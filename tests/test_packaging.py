"""What a user gets from ``pip install``: the sdist and the wheel are built as a release
would build them, the wheel is installed into a fresh virtual environment without any
extra, and the command is walked there (``--version``, ``init``, ``put``, ``get``,
``policy explain``, ``serve`` answering ``/healthz``, every ``bench`` command at its
smallest size). A command that needs an extra says which, in one line, with exit code 2.
Then each extra of ``pyproject.toml`` is installed into the same environment, one after
the other, and its commands are walked. ``uv tool install .`` and ``pipx install .`` give a
working ``domicile``. The Dockerfile is linted with hadolint and its steps are run without
Docker; the image is built and run only where a Docker engine answers (none does on the
development machines, so there that one test is skipped).

The environments reuse pip's cache; the whole file takes about two minutes. It is marked
``packaging``: CI runs it, ``pytest -m 'not packaging'`` leaves it out.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from domicile._version import __version__
from domicile.extras import EXTRAS

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BIN = Path(sys.executable).parent  # the dev environment's tools: build, uv, hadolint
STEP = 240  # seconds: the longest any one step may take (an install from a cold cache)


def _env(**extra: str) -> dict[str, str]:
    """The environment of a new user: no deployment, pack folder or virtual environment of
    ours set, the dev environment not on the PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DOMICILE_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != BIN
    )
    env.update(extra)
    return env


def _run(
    argv: list[str | Path], *, cwd: Path, timeout: float = STEP, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env or _env(), capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serving(argv: list[str | Path], cwd: Path, port: int) -> Iterator[None]:
    """Start ``domicile serve``, wait (60 s at most) until ``/healthz`` answers ok, yield,
    then stop it; its output must hold no traceback."""
    log = cwd / f"serve-{port}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [str(a) for a in argv], cwd=cwd, env=_env(), stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                        assert r.status == 200
                        assert json.loads(r.read()) == {"status": "ok"}
                        break
                except OSError:
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, "serve did not answer /healthz in 60 s"
                    time.sleep(0.2)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
    assert "Traceback" not in log.read_text()


def _source_files() -> list[str]:
    """The package's files as the repository holds them (``domicile/...``)."""
    listed = subprocess.run(
        ["git", "ls-files", "src/domicile"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode == 0 and listed.stdout.strip():
        names = listed.stdout.split()
    else:  # not a git checkout (an unpacked sdist): every file but caches
        names = [
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / "src" / "domicile").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        ]
    return sorted(n.removeprefix("src/") for n in names)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, and the wheel built from it (``python -m build``), as a release makes them."""
    out = tmp_path_factory.mktemp("dist")
    _ok(_run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=out))
    (sdist,) = out.glob("domicile-*.tar.gz")
    (wheel,) = out.glob("domicile-*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, dist: dict[str, Path]) -> Path:
    """A fresh virtual environment holding the wheel and no extra."""
    where = tmp_path_factory.mktemp("venv") / "v"
    _ok(_run([sys.executable, "-m", "venv", where], cwd=where.parent))
    _ok(_run([where / "bin" / "python", "-m", "pip", "install", dist["wheel"]], cwd=where.parent))
    return where


def test_the_wheel_and_the_sdist_hold_every_file_of_the_package(dist: dict[str, Path]) -> None:
    files = _source_files()
    # the packs, the starter files and the tours: what a user's first commands read
    for needed in ("domicile/packs/data/ru.yaml", "domicile/deploy/starter.py", "domicile/tour"):
        assert any(f.startswith(needed) for f in files), needed
    with zipfile.ZipFile(dist["wheel"]) as whl:
        held = set(whl.namelist())
        metadata = whl.read(f"domicile-{__version__}.dist-info/METADATA").decode()
        entry_points = whl.read(f"domicile-{__version__}.dist-info/entry_points.txt").decode()
    assert sorted(set(files) - held) == []
    assert f"Version: {__version__}\n" in metadata
    assert "domicile = domicile.cli.app:main" in entry_points
    for extra in EXTRAS:
        assert f"Provides-Extra: {extra}\n" in metadata
    with tarfile.open(dist["sdist"]) as tar:
        top = f"domicile-{__version__}/"
        in_sdist = {n.removeprefix(top) for n in tar.getnames()}
    assert {"pyproject.toml", "README.md"} <= in_sdist
    assert sorted({f"src/{f}" for f in files} - in_sdist) == []


def _third_party_imports() -> set[str]:
    """Top-level names of every absolute import in the package that is not ours or the
    standard library's (imports inside functions included)."""
    names: set[str] = set()
    for path in (ROOT / "src" / "domicile").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n != "domicile" and n not in sys.stdlib_module_names}


FIND = "import importlib.util, json, sys; print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))"


def _missing(venv: Path, modules: set[str] | tuple[str, ...]) -> list[str]:
    done = _run([venv / "bin" / "python", "-c", FIND, *sorted(modules)], cwd=venv.parent)
    return sorted(json.loads(_ok(done)))


def test_a_plain_install_lacks_only_what_the_extras_bring(venv: Path) -> None:
    """Every package the code imports is a core dependency, or a module of an extra
    (``domicile.extras.EXTRAS``), whose commands check for it first."""
    optional = {m for modules in EXTRAS.values() for m in modules}
    lacking = set(_missing(venv, _third_party_imports()))
    assert lacking - optional == set(), "a core dependency is missing from pyproject.toml"
    declared = set(PYPROJECT["project"]["optional-dependencies"]) - {"dev"}
    assert declared == set(EXTRAS), "every extra of pyproject.toml is listed in domicile.extras"


def _walk_core(venv: Path, work: Path) -> None:
    dom = venv / "bin" / "domicile"

    out = _ok(_run([dom, "--version"], cwd=work))
    first, packs = out.splitlines()
    assert first == f"domicile {__version__}"
    for pack in (ROOT / "src" / "domicile" / "packs" / "data").glob("*.yaml"):
        assert f"{pack.stem} " in packs.removeprefix("packs: ")

    out = _ok(_run([dom, "init", "deploy"], cwd=work))
    config = work / "deploy" / "domicile.yaml"
    assert config.is_file()
    env = _env(DOMICILE_CONFIG=str(config))
    put = json.loads(_ok(_run(
        [dom, "put", "profiles", "--subject", "citizenship=RU", "--field", "full_name=Anna Volkova",
         "--field", "email=anna@example.ru", "--purpose", "account_signup", "--json"],
        cwd=work, env=env,
    )))  # fmt: skip
    assert put["site"] == "ru"
    got = json.loads(_ok(_run(
        [dom, "get", put["token"], "--purpose", "profile_view", "--as-site", "ru", "--json"],
        cwd=work, env=env,
    )))  # fmt: skip
    assert got["fields"] == {"full_name": "Anna Volkova", "email": "anna@example.ru"}

    explained = json.loads(_ok(_run(
        [dom, "policy", "explain", "--subject", "citizenship=RU", "--category",
         "user.contact.email", "--operation", "store", "--site-country", "DE", "--date",
         "2025-09-01", "--json"],
        cwd=work,
    )))  # fmt: skip
    assert explained["decision"] == "deny"

    # the tours: the policy engine's, and the vault's on a sample population
    assert "DENY" in _ok(_run([dom, "policy", "tour"], cwd=work))
    demo = json.loads(_ok(_run([dom, "demo", "--dir", "demo", "--json"], cwd=work)))
    assert demo["placements"]
    assert demo["plaintext_check"]["found"] == []

    port = _free_port()
    argv = [dom, "serve", "--port", str(port), "--workers", "1", "--config", config]
    with _serving(argv, work, port):
        pass


# Every bench command at its smallest size, and the extra it needs (None: the core's).
BENCH: list[tuple[str | None, list[str]]] = [
    (None, ["policy", "--seconds", "0.05"]),
    ("bench", ["vault", "--records", "100", "--batch", "100", "--gets", "1", "--readers", "1"]),
    (None, ["transfers", "--records", "100", "--reads", "10", "--parity-records", "0"]),
    (None, ["scale", "--records", "1000"]),
    (None, ["http", "--seconds", "0.5", "--concurrency", "1", "--workers", "1", "--batch", "1"]),
    ("scan", ["scan", "--subjects", "50", "--sample", "10"]),
    ("federation", ["federation", "--records", "10", "--connections", "1"]),
]


def test_every_bench_command_is_walked() -> None:
    from domicile.cli.bench import bench_app

    names = {
        c.name or (c.callback.__name__ if c.callback else "") for c in bench_app.registered_commands
    }
    assert names == {argv[0] for _, argv in BENCH}


def _scan_source(work: Path) -> Path:
    source = work / "people.csv"
    source.write_text("full_name,email,phone\nAnna Volkova,anna@example.ru,+79161234567\n")
    return source


# A site's key provider of each custody extra, pointing where nothing answers: the walk
# shows the extra is needed (exit 2 without it) and, with it, that the provider loads and
# reports its site unavailable (exit 4). tests/keys drives real ones.
CUSTODY = {
    "hsm": "{kind: pkcs11, module: /nonexistent/libpkcs11.so, token: t, pin_env: DOMICILE_PKCS11_PIN}",
    "kms": '{kind: transit, url: "https://127.0.0.1:9", token_env: DOMICILE_TEST_VAULT_TOKEN, timeout: 5}',
}


def _custody_deployment(venv: Path, work: Path, extra: str) -> Path:
    """A deployment whose RU site keeps its keys with the extra's provider; only the US
    site (on the keyring file) is set up."""
    folder = work / f"custody-{extra}"
    if not folder.exists():
        folder.mkdir()
        (folder / "domicile.yaml").write_text(
            "default_site: us\nsites:\n"
            '  - {id: ru, country: RU, backend: "sqlite:data/ru.sqlite", key_provider: '
            + CUSTODY[extra]
            + ",\n"
            '     location: {provider: P, city: Moscow, address: "1 Street"}}\n'
            '  - {id: us, country: US, backend: "sqlite:data/us.sqlite",\n'
            '     location: {provider: P, city: Ashburn, address: "3 Way"}}\n'
            "collections:\n  profiles:\n    fields:\n      full_name: {category: user.name}\n"
        )
        _ok(
            _run(
                [venv / "bin" / "domicile", "sites", "create", "us", "--config", str(folder)],
                cwd=work,
            )
        )
    return folder


def _walk_extra(venv: Path, work: Path, extra: str | None) -> None:
    """The commands of one extra (None: the core's bench commands): with the extra
    installed they work; without it, one line naming it, exit 2."""
    dom = venv / "bin" / "domicile"
    installed = extra is None or not _missing(venv, EXTRAS[extra])
    if extra == "console":
        _walk_console(venv, work, installed)
        return
    commands = [["bench", *argv, "--json"] for needs, argv in BENCH if needs == extra]
    if extra == "scan":
        commands.append(["scan", str(_scan_source(work)), "--located-in", "DE", "--json"])
    if extra == "spark":  # the same source, its full pass a Spark job in local mode
        commands.append(
            ["scan", str(_scan_source(work)), "--located-in", "DE", "--engine", "spark",
             "--master", "local[1]", "--json"]
        )  # fmt: skip
    if extra == "reports":  # on the deployment the core's walk made
        deploy = str(work / "deploy")
        commands.append(
            ["report", "register", "--config", deploy, "--out", str(work / "r.pdf"), "--json"]
        )
        commands.append(
            ["report", "compliance", "--jurisdiction", "RU", "--since", "2026-01-01", "--until",
             "2026-12-31", "--config", deploy, "--out", str(work / "c.html"), "--json"]
        )  # fmt: skip
    if extra == "federation":  # on a federated deployment of its own (init needs no extra)
        federated = work / "federated"
        if not federated.exists():
            _ok(_run([dom, "init", str(federated), "--federated", "--json"], cwd=work))
        commands.append(["federation", "check", "--config", str(federated), "--json"])
    expect_down = extra in CUSTODY  # a provider that loads, then does not answer (exit 4)
    if expect_down:
        commands.append(
            ["keys", "status", "--config", str(_custody_deployment(venv, work, extra)), "--json"]
        )
    assert commands, f"no command walked for the extra {extra!r}: add them to this test"
    for argv in commands:
        done = _run([dom, *argv], cwd=work)
        if installed and expect_down:
            assert done.returncode == 4, f"{argv}: {done.returncode}\n{done.stderr[-2000:]}"
            rows = {r["site"]: r for r in json.loads(done.stdout)["sites"]}
            assert rows["ru"]["error"]["code"] == "key_provider_unavailable"
            assert rows["us"]["answers"] is True
            continue
        if installed:
            assert isinstance(json.loads(_ok(done)), dict)
            continue
        assert done.returncode == 2, f"{argv}: {done.returncode}\n{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr
        error = json.loads(done.stdout)["error"]
        assert error["code"] == "missing_extra"
        assert f"'{extra}' extra" in error["message"]
        assert f"pip install 'domicile[{extra}]'" in error["hint"]
        human = _run([dom, *argv[:-1]], cwd=work)  # the same without --json: one line
        assert human.returncode == 2
        assert human.stderr.count("\n") == 1, human.stderr
        assert f"domicile[{extra}]" in human.stderr


def _walk_console(venv: Path, work: Path, installed: bool) -> None:
    """``serve`` runs without the console extra; /console and /docs then say, in one
    line, which extra to install (503). With it, both answer, their assets served here."""
    port = _free_port()
    config = work / "deploy" / "domicile.yaml"
    argv = [venv / "bin" / "domicile", "serve", "--port", str(port), "--workers", "1",
            "--config", config]  # fmt: skip
    with _serving(argv, work, port):
        for path, expect in (("/console/signin", "Sign in"), ("/docs", "swagger-ui")):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    status, body = r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read().decode()
            if installed:
                assert status == 200, (path, status)
                assert expect in body
            else:
                assert status == 503, (path, status)
                assert body.count("\n") == 1
                assert "'console' extra" in body
                assert "pip install 'domicile[console]'" in body


def test_a_plain_install_walks_and_each_extra_brings_its_commands(
    venv: Path, dist: dict[str, Path], tmp_path: Path
) -> None:
    assert _missing(venv, tuple(m for ms in EXTRAS.values() for m in ms)), "extras installed"
    _walk_core(venv, tmp_path)
    for extra in [None, *EXTRAS]:
        _walk_extra(venv, tmp_path, extra)  # no extra installed yet: each says which
    pip = [venv / "bin" / "python", "-m", "pip", "install"]
    for extra in EXTRAS:  # one after the other, into the same environment
        _ok(_run([*pip, f"{dist['wheel']}[{extra}]"], cwd=tmp_path))
        assert _missing(venv, EXTRAS[extra]) == []
        _walk_extra(venv, tmp_path, extra)


@pytest.mark.parametrize("tool", ["uv", "pipx"])
def test_a_tool_install_gives_a_working_command(tool: str, tmp_path: Path) -> None:
    """``uv tool install .`` and ``pipx install .``: the command in an environment of its
    own, on the PATH (here a folder of the test's)."""
    bin_dir = tmp_path / "bin"
    if tool == "uv":
        env = _env(UV_TOOL_DIR=str(tmp_path / "tools"), UV_TOOL_BIN_DIR=str(bin_dir))
        argv: list[str | Path] = [BIN / "uv", "tool", "install", ROOT]
    else:
        env = _env(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(bin_dir))
        argv = [BIN / "pipx", "install", ROOT]
    _ok(_run(argv, cwd=tmp_path, env=env))
    path = _env()["PATH"]
    out = _ok(_run(["domicile", "--version"], cwd=tmp_path, env=_env(PATH=f"{bin_dir}:{path}")))
    assert out.startswith(f"domicile {__version__}\npacks: ")


def test_the_dockerfile_lints_clean_and_has_what_a_deployment_needs() -> None:
    text = (ROOT / "Dockerfile").read_text()
    done = _run([BIN / "hadolint", "--no-color", ROOT / "Dockerfile"], cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert sum(line.startswith("FROM ") for line in lines) >= 2  # multi-stage
    user = next(line for line in lines if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in ("0", "root")
    assert 'VOLUME ["/data"]' in lines
    assert any(line.startswith("HEALTHCHECK ") and "/healthz" in text for line in lines)
    assert any(line.startswith('ENTRYPOINT ["domicile", "serve"') for line in lines)
    assert "[console]" in text  # the console and the offline /docs are served by the image
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignored  # the context is the sources only
    assert "!src/" in ignored


def _dockerfile_json(instruction: str) -> list[str]:
    """The exec-form argument list of a Dockerfile instruction (``ENTRYPOINT``, or the
    health check's ``CMD``), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith(instruction + " "))
    args = line.split(" CMD ", 1)[1] if instruction == "HEALTHCHECK" else line.split(" ", 1)[1]
    return list(json.loads(args))


def test_the_image_steps_work_without_docker(
    venv: Path, dist: dict[str, Path], tmp_path: Path
) -> None:
    """What the Dockerfile does, step by step, where no engine runs: its build context
    (what .dockerignore lets through) builds the same wheel; its entry point, in an empty
    folder, makes and serves the embedded default there; its health check passes."""
    context = tmp_path / "context"
    kept = [
        x[1:].rstrip("/") for x in (ROOT / ".dockerignore").read_text().split() if x.startswith("!")
    ]
    for name in kept:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, context / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, context / name)
    out = tmp_path / "out"
    _ok(_run([sys.executable, "-m", "build", "--wheel", "--outdir", out, context], cwd=tmp_path))
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as a, zipfile.ZipFile(dist["wheel"]) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())

    entry = _dockerfile_json("ENTRYPOINT")
    assert entry[:2] == ["domicile", "serve"]
    check = _dockerfile_json("HEALTHCHECK")
    data = tmp_path / "data"  # the volume, empty on the first start
    data.mkdir()
    port = _free_port()
    # arguments after the image name go to serve; here they keep it on the loopback
    argv = [venv / "bin" / entry[0], *entry[1:], "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]  # fmt: skip
    with _serving(argv, data, port):
        assert (data / "domicile-service" / "domicile.yaml").is_file()
        probe = [venv / "bin" / check[0], *(a.replace("8700", str(port)) for a in check[1:])]
        _ok(_run(probe, cwd=data, timeout=30))


def _docker_engine() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture
def docker_image() -> Iterator[str]:
    if not _docker_engine():
        pytest.skip("no Docker engine answers here: the Dockerfile is linted, not built")
    tag = f"domicile-test:{os.getpid()}"
    _ok(_run(["docker", "build", "--quiet", "-t", tag, ROOT], cwd=ROOT, timeout=600))
    try:
        yield tag
    finally:
        _run(["docker", "rmi", "--force", tag], cwd=ROOT, timeout=120)


def test_the_image_serves_the_embedded_default(docker_image: str) -> None:
    port = _free_port()
    name = f"domicile-test-{os.getpid()}"
    _ok(_run(
        ["docker", "run", "--detach", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8700",
         docker_image, "--workers", "1"],
        cwd=ROOT, timeout=120,
    ))  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the container did not answer /healthz"
                time.sleep(0.5)
        whoami = _ok(_run(["docker", "exec", name, "id", "-u"], cwd=ROOT, timeout=60))
        assert whoami.strip() != "0"
    finally:
        _run(["docker", "rm", "--force", name], cwd=ROOT, timeout=120)
