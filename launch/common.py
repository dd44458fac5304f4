"""Launcher plumbing shared by tpu_vm.py, xpk.py, slurm.py and sweep.py (no JAX imports).

Every launcher builds argv lists and hands them to a `Runner`, which prints each command as a
pasteable shell line (`shlex.join`) and runs it without a local shell, or only prints it with
`--dry-run`. Arguments reach the remote side quoted exactly once.
"""

import hashlib
import os
import re
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Runner:
    """Prints (`+ cmd`) and runs commands; with `dry_run` it only prints them."""

    def __init__(self, dry_run: bool, out=None):
        self.dry_run, self.out = dry_run, out or sys.stdout

    def show(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def run(self, cmd: list[str], *, stdin: str | None = None, cwd: str | None = None) -> int:
        line = shlex.join(cmd) + (f" < {shlex.quote(stdin)}" if stdin else "")
        if cwd:
            line = f"(cd {shlex.quote(cwd)} && {line})"
        self.show(line)
        if self.dry_run:
            return 0
        if stdin:
            with open(stdin, "rb") as f:
                return subprocess.run(cmd, stdin=f, cwd=cwd, check=True).returncode
        return subprocess.run(cmd, cwd=cwd, check=True).returncode

    def write(self, path: str, text: str) -> None:
        self.show(f"# {path}:\n{text}")
        if not self.dry_run:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)


def job_name(run: str, max_len: int = 40) -> str:
    """A cloud-safe name for a run: lower-case [a-z0-9-], starts with a letter, <= max_len
    (a long name keeps a hash of the full one so that distinct runs stay distinct)."""
    name = re.sub(r"[^a-z0-9-]+", "-", run.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "r-" + name
    if len(name) > max_len:
        digest = hashlib.sha1(run.encode()).hexdigest()[:6]
        name = name[: max_len - 7].rstrip("-") + "-" + digest
    return name


def git_commit(ref: str = "HEAD") -> str:
    """The full commit id of `ref` in this repository (what every host will run)."""
    out = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"launch: cannot resolve commit {ref!r}: {out.stderr.strip()}")
    return out.stdout.strip()


def colajax_command(argv: list[str]) -> list[str]:
    """`-- colajax train ...` (or `-- train ...`) -> ['colajax', 'train', ...]."""
    argv = list(argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise SystemExit("launch: give the colajax command after --, e.g. -- colajax train ...")
    if argv[0] != "colajax":
        argv = ["colajax", *argv]
    return argv


def with_slices(command: list[str], num_slices: int) -> list[str]:
    """Adds `--config.mesh.num_slices=N` to a colajax command that takes a config."""
    has_config = any(a == "--config" or a.startswith("--config=") for a in command)
    given = any(a.startswith("--config.mesh.num_slices") for a in command)
    if num_slices > 1 and has_config and not given:
        return [*command, f"--config.mesh.num_slices={num_slices}"]
    return command


def parse_env(items: list[str]) -> dict[str, str]:
    """['K=V', ...] -> {'K': 'V'} with a clear error for a malformed item."""
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise SystemExit(f"launch: --env {item!r} is not NAME=VALUE.")
        env[key] = value
    return env


def exports(env: dict[str, str]) -> str:
    """`export K='V'; ...` for a remote shell script (values quoted)."""
    return "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items())
