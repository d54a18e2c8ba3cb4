"""otter-edge's sandbox checks: the grading driver (grade.py) refuses to grade unless the container
can really keep the student apart, and exits EX_SANDBOX before any student code runs.

./grade checks the container's start (root holding exactly CAP_SETUID, CAP_SETGID, CAP_SETPCAP)
and drops to the grader uid; check_sandbox checks, as that uid, what the split relies on from then
on: the grader's uid, no-new-privileges, the ambient capabilities that start the kernel as the
student uid (./student-kernel), and a grader home that the student uid cannot read.
"""

import os
import sys

GRADER_UID = 10001
STUDENT_UID = 10002
# CAP_SETGID = 6, CAP_SETUID = 7: what starting the kernel as the student needs; CAP_SETPCAP = 8
# empties the student's bounding set.
SWITCH_CAPS = (1 << 6) | (1 << 7) | (1 << 8)
GRADER_HOME = "/home/grader"
# Exit code for "this container cannot keep the student apart": the runner treats it as an
# infrastructure failure (never a student's zero). The student cannot cause it: it is checked
# before any student code runs.
EX_SANDBOX = 70


def fail_sandbox(message):
    print(f"otter-edge grade: {message}", file=sys.stderr)
    sys.exit(EX_SANDBOX)


def check_sandbox():
    """Refuse to grade unless the student can really be kept apart."""
    if os.getuid() != GRADER_UID or os.geteuid() != GRADER_UID:
        fail_sandbox(f"expected uid {GRADER_UID}, running as {os.getuid()}/{os.geteuid()}")
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    if status.get("NoNewPrivs", "").strip() != "1":
        fail_sandbox("no_new_privs is off: the container must run with no-new-privileges")
    if int(status["CapAmb"], 16) & SWITCH_CAPS != SWITCH_CAPS:
        fail_sandbox("CAP_SETUID/CAP_SETGID/CAP_SETPCAP missing: the kernel could not run as the student uid")
    st = os.stat(GRADER_HOME)
    if st.st_uid != GRADER_UID or st.st_mode & 0o077:
        fail_sandbox(f"{GRADER_HOME} must be owned by {GRADER_UID} with mode 0700 (a tmpfs with uid=, mode=)")
