"""A fully isolated worker sees the Python runtime and its libraries read-only, its own scratch
folder, its own /proc and a few device nodes: no results or instance folder, no working directory
or home of the harness, no leakbench source, presets or README (containment.prepare_view).

Each check runs twice: with the pool's scratch folders in the default temporary folder, and
under a TMPDIR of the test's own (the view must not depend on where scratch folders live).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import leakbench
from leakbench.sandbox import SandboxError, SandboxLimits, SandboxPool

if os.geteuid() != 0:
    pytest.skip(
        "the worker's filesystem view needs full isolation (mount namespaces), i.e. root",
        allow_module_level=True,
    )

# No print-values guard: the probes print listings with digits in them. A generous timeout: one
# probe fits a forest, starts process pools and a second Python, on a possibly busy machine.
LIMITS = SandboxLimits(
    call_timeout_s=120.0, memory_mb=2048, print_values_factor=0, stdout_max_chars=200_000
)
REPO = Path(leakbench.__file__).resolve().parents[1]
SECRET = "the-answer-is-4242"
PYTHON_HOMES = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}

LOOK = """
import os
def look(path):
    try:
        if os.path.isdir(path):
            return ("listed", sorted(os.listdir(path)))
        with open(path, "rb") as fh:
            return ("read", fh.read(200))
    except FileNotFoundError:
        return "absent"
    except PermissionError:
        return "denied"
{path: look(path) for path in %r}
"""


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(5)
    train = pd.DataFrame({"num_0": rng.normal(size=200), "num_1": rng.normal(size=200)})
    train["target"] = (train["num_0"] > 0).astype(int)
    return train, train.drop(columns="target")


@pytest.fixture(scope="module")
def area(tmp_path_factory):
    """The harness's folders for these tests; in the second run also the pool's TMPDIR."""
    return tmp_path_factory.mktemp("harness")


@pytest.fixture(scope="module", params=["default-tmpdir", "tmpdir-beside-results"])
def pool(request, area):
    with pytest.MonkeyPatch.context() as mp:
        own = None
        if request.param == "tmpdir-beside-results":
            own = area / f"tmp-{os.getpid()}"
            own.mkdir()
            mp.setenv("TMPDIR", str(own))
            mp.setattr(tempfile, "tempdir", None)  # tempfile caches the folder it chose
        p = SandboxPool(isolation="full", grace_s=1.0)
        try:
            p.start()
        except SandboxError as exc:
            p.close()
            pytest.skip(f"full isolation is not available here: {exc}")
        if p.isolation != "full":
            note = p.isolation_note
            p.close()
            pytest.skip(f"full isolation is not available here: {note}")
        with p:
            assert p._base is not None
            if own is not None:
                assert p._base.startswith(str(own) + "/")
            yield p


@pytest.fixture
def session(pool):
    with pool.open(*frames(), LIMITS) as s:
        yield s


def run(session, code: str):
    result = session.execute(code)
    assert result.ok, result.output
    return ast.literal_eval(result.output)


def look(session, paths: list[str]) -> dict[str, object]:
    return run(session, LOOK % (paths,))


def ancestors(path: str) -> set[str]:
    out, parent = set(), os.path.dirname(path)
    while parent != "/":
        out.add(parent)
        parent = os.path.dirname(parent)
    return out


@pytest.fixture(scope="module")
def harness_files(area):
    """A results folder and an instance folder as the harness writes them, world-readable where
    the harness makes them so (only the view keeps the worker out), plus one 0600 answer key."""
    results = area / "results" / "20250101-000000-local-x"
    (results / "episodes" / "000").mkdir(parents=True)
    grade = results / "episodes" / "000" / "grade.json"
    grade.write_text(f'{{"score": 0.9, "note": "{SECRET}"}}')
    instance = area / "instances" / "seed-7"
    instance.mkdir(parents=True)
    public = instance / "train.csv"
    public.write_text(f"num_0,target\n0.5,{SECRET}\n")
    key = instance / "test_answers.csv"
    key.write_text(f"target\n{SECRET}\n")
    for folder in (area / "results", area / "instances", instance, grade.parent):
        while folder != area:
            folder.chmod(0o755)
            folder = folder.parent
    grade.chmod(0o644)
    public.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)  # 0644
    key.chmod(stat.S_IRUSR | stat.S_IWUSR)  # 0600
    return {"results": results, "grade": grade, "instance": instance, "public": public, "key": key}


# -- what must not be there -------------------------------------------------------------------


def on_the_way_to_python(path: str) -> bool:
    return any(p == path or p.startswith(path + "/") for p in PYTHON_HOMES)


def test_harness_files_are_not_in_the_view(session, harness_files, area, tmp_path):
    scratch = run(session, "import os\nos.getcwd()")
    cwd = os.getcwd()
    assert cwd == str(tmp_path)  # conftest: the harness works in tmp_path
    paths = [str(p) for p in harness_files.values()]
    paths += [str(area / "results"), str(area / "instances"), str(area)]
    paths += [cwd, str(REPO), str(REPO / "README.md"), str(REPO / "leakbench" / "configs")]
    paths += [str(REPO / "leakbench" / "configs" / "default.toml"), leakbench.__file__]
    paths += [str(REPO.parent), "/etc/passwd", "/etc/shadow", "/etc/hostname", "/var/tmp"]
    seen = look(session, paths)
    checked = 0
    for path in paths:
        if on_the_way_to_python(path):
            continue
        checked += 1
        if path in ancestors(scratch):
            # A folder above the worker's scratch folder (here: a TMPDIR beside the results) is
            # there to be passed through, not listed: it holds nothing but the way down.
            only_child = ("listed", [scratch[len(path) + 1 :].split("/")[0]])
            assert seen[path] in ("denied", only_child), (path, seen[path])
        else:
            assert seen[path] == "absent", (path, seen[path])
    assert checked >= len(paths) - 2
    assert SECRET not in repr(seen)


def test_harness_home_and_root_show_nothing_but_the_way_to_python(session):
    home = os.path.expanduser("~")
    folders = sorted({home, "/root"})
    entries = [os.path.join(f, e) for f in folders if os.path.isdir(f) for e in os.listdir(f)]
    seen = look(session, folders + entries)
    python_path = {a for p in PYTHON_HOMES for a in ancestors(p) | {p}}
    for folder in folders:
        # absent, or passable but not listable (a 0700 home above a pyenv install), or listing
        # only what leads to Python
        state = seen[folder]
        if isinstance(state, tuple):
            assert state[0] == "listed"
            assert all(os.path.join(folder, e) in python_path for e in state[1]), state
        else:
            assert state in ("absent", "denied"), (folder, state)
    for entry in entries:
        if entry not in python_path:
            assert seen[entry] == "absent", (entry, seen[entry])


def test_leakbench_metadata_and_editable_hooks_are_hidden(session):
    import importlib.metadata

    dist = importlib.metadata.distribution("leakbench")
    files = [str(dist.locate_file(f)) for f in (dist.files or [])]
    site_dirs = {str(dist.locate_file(""))}
    hooks = [
        os.path.join(d, name)
        for d in site_dirs
        for name in os.listdir(d)
        if "leakbench" in name.lower()
    ]
    assert hooks  # at least the dist-info folder
    code = (
        "import importlib.metadata\n"
        "try:\n"
        "    meta = importlib.metadata.metadata('leakbench')\n"
        "    meta = None if meta is None else dict(meta)\n"
        "except importlib.metadata.PackageNotFoundError:\n"
        "    meta = 'not found'\n"
        "meta"
    )
    assert run(session, code) in (None, "not found", {})
    seen = look(session, hooks + [f for f in files if "dist-info" in f])
    for path in hooks:
        if os.path.isdir(path):
            assert seen[path] == ("listed", []), (path, seen[path])
        else:
            assert seen[path] in ("absent", ("read", b"")), (path, seen[path])
    for path in files:
        if "dist-info" in path:
            assert seen[path] == "absent", path


def test_only_the_view_is_mounted_and_only_scratch_is_writable(session, pool):
    scratch = run(session, "import os\nos.getcwd()")
    assert scratch.startswith(pool._base + "/")
    mounts = run(
        session,
        "[(line.split()[4], line.split()[5]) for line in open('/proc/self/mountinfo')]",
    )
    writable = {target for target, options in mounts if "rw" in options.split(",")}
    devices = {f"/dev/{d}" for d in ("null", "zero", "full", "random", "urandom")}
    assert writable - devices == {scratch, "/dev/shm", "/proc"}
    assert {scratch, "/dev/shm", "/proc", "/"} <= {target for target, _ in mounts}
    allowed = {"/", "/proc", "/dev", "/dev/shm", scratch, *devices, *PYTHON_HOMES}
    for target, _ in mounts:
        assert (
            target in allowed
            or target.startswith(("/usr", "/etc/", "/var/cache/fontconfig"))
            or any(target.startswith(p + "/") for p in PYTHON_HOMES)
        ), target
    top = run(session, "import os\nsorted(os.listdir('/'))")
    expected = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "var"}
    expected |= {"dev", "proc", "tmp"}
    expected |= {p.split("/")[1] for p in (*PYTHON_HOMES, os.path.realpath(scratch))}
    assert set(top) <= expected, set(top) - expected
    etc = run(session, "import os\nsorted(os.listdir('/etc'))")
    assert set(etc) <= {
        "ld.so.cache",
        "ld.so.conf",
        "ld.so.conf.d",
        "localtime",
        "alternatives",
        "fonts",
    }, etc
    assert "ld.so.cache" in etc
    dev = run(session, "import os\nsorted(os.listdir('/dev'))")
    assert set(dev) == {*(d.split("/")[-1] for d in devices), "shm", "fd"} | {
        "stdin",
        "stdout",
        "stderr",
    }
    for path in ("/usr/leakbench-x", "/etc/leakbench-x", "/tmp/leakbench-x", "/x"):
        result = session.execute(f"open({path!r}, 'w')")
        assert not result.ok and "Read-only file system" in result.output, path


# -- what must work ---------------------------------------------------------------------------


def test_scratch_tempfiles_and_proc(session, pool):
    result = run(
        session,
        "import os, tempfile\n"
        "open('notes.txt', 'w').write('kept')\n"
        "with tempfile.NamedTemporaryFile() as fh:\n"
        "    fh.write(b'x'); fh.flush(); temp = fh.name\n"
        "(os.getcwd(), os.environ['HOME'], open('notes.txt').read(), os.path.dirname(temp),\n"
        " os.path.isdir('/proc/self'), os.readlink('/proc/self'),\n"
        " sorted(p for p in os.listdir('/proc') if p.isdigit()))",
    )
    cwd, home, notes, temp_dir, proc_self, self_link, pids = result
    assert cwd.startswith(pool._base + "/") and home == cwd and temp_dir == cwd
    assert notes == "kept"
    assert proc_self and self_link == "1"
    assert pids == ["1"]  # only the worker itself, pid 1 of its own namespace


def test_python_and_its_libraries_work_for_the_worker_uid(session):
    code = (
        "import os, subprocess, sys\n"
        "import sklearn.ensemble, sqlite3, ssl, multiprocessing, joblib\n"
        "from sklearn.ensemble import RandomForestClassifier\n"
        "X, y = train_df[['num_0', 'num_1']], train_df['target']\n"
        "fit = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y).score(X, y)\n"
        "db = sqlite3.connect(':memory:').execute('select 41 + 1').fetchone()[0]\n"
        "tls = ssl.create_default_context().check_hostname\n"
        "with multiprocessing.get_context('fork').Pool(2) as workers:\n"
        "    mp = workers.map(abs, [-1, -2])\n"
        "lock = multiprocessing.Lock().acquire()  # a POSIX semaphore in /dev/shm\n"
        "jobs = joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(i) for i in (-3, -4))\n"
        "child = subprocess.run([sys.executable, '-c', 'import numpy, pandas; print(7)'],\n"
        "                       capture_output=True, text=True, timeout=60)\n"
        "shell = subprocess.run(['sh', '-c', 'echo hi > /dev/null && ls /usr/bin/env'],\n"
        "                       capture_output=True, text=True, timeout=60)\n"
        "(os.getuid() != 0, fit > 0.9, db, tls, mp, lock, jobs, child.stdout, child.returncode,\n"
        " shell.stdout, shell.returncode)"
    )
    assert run(session, code) == (
        True,
        True,
        42,
        True,
        [1, 2],
        True,
        [3, 4],
        "7\n",
        0,
        "/usr/bin/env\n",
        0,
    )


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="no matplotlib")
def test_matplotlib_draws_without_complaints(session):
    result = session.execute(
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3]); plt.title('x'); plt.savefig('plot.png')\n"
        "import os\n"
        "os.path.getsize('plot.png') > 1000"
    )
    assert result.ok and result.output == "True\n", result.output
