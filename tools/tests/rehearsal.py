"""Run a GitHub Actions job here, as written: parse the workflow, evaluate its expressions, substitute, run.

A job's `run:` steps run in order with bash (`bash -e {0}`, or `bash --noprofile --norc -eo pipefail {0}` for
`shell: bash`, as GitHub does), in the step's `working-directory`, with the workflow, job and step `env:`
and GitHub's default variables (GITHUB_SHA, GITHUB_REF, ...). `${{ }}` expressions and `if:` conditions
are evaluated from a `Context` (github.*, secrets.*, vars.*, env.*); anything the evaluator does not know
(a context key, a function, an operator) raises `RehearsalError`, so nothing is skipped silently.

The `uses:` steps have local equivalents (USES); any other action is an error:
- actions/checkout: what the action does, against a local bare repository standing for GitHub (`origin`):
  init, fetch the ref (`fetch-depth` honoured), check out a branch for refs/heads/*, else detached;
- actions/setup-python: a venv of this Python, first on PATH (python, pip); the version must be this one;
- actions/upload-artifact: `path` copied into `<uploads>/<name>/`.
Shims first on PATH (`Runner.shims`): `sudo` runs its command; `gh` records its argv in gh.jsonl and
checks that the files `gh release create` names exist; `buildah`/`skopeo` get `--registries-conf`
naming a registries.conf that marks the local registry plain http (Debian bookworm's buildah 1.28 and
skopeo 1.9 ignore CONTAINERS_REGISTRIES_CONF). `registry_host` replaces `ghcr.io` in run scripts and env
values. Each job has its own XDG_RUNTIME_DIR, so a login (containers/auth.json there) serves that job only.

Standard library and PyYAML (the tooling's nox venv has it).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class RehearsalError(Exception):
    """The workflow uses something this rehearsal cannot run or evaluate (never skipped)."""


# --- parse ----------------------------------------------------------------------------------------------


def load_workflow(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as true.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def triggered(workflow: dict[str, Any], event: str, ref: str) -> bool:
    """Whether `event` on `ref` starts the workflow (push: branches/tags filters, as GitHub reads them)."""
    on = workflow["on"]
    on = {on: None} if isinstance(on, str) else dict.fromkeys(on) if isinstance(on, list) else on
    if event not in on:
        return False
    filters = on[event] or {}
    if event != "push" or not filters:
        return True
    kind, _, name = ref.removeprefix("refs/").partition("/")
    patterns = filters.get("branches" if kind == "heads" else "tags")
    # Only branch filters: tag pushes do not start it, and the other way round.
    return patterns is not None and any(fnmatch.fnmatchcase(name, p) for p in patterns)


# --- evaluate -------------------------------------------------------------------------------------------

TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||!|\(|\)|,)"
                   r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*))")  # fmt: skip
STATUS_FUNCTIONS = ("always", "success", "failure", "cancelled")


@dataclass
class Context:
    github: dict[str, Any]
    secrets: dict[str, str]
    vars: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    failed: bool = False  # a previous step of the job failed (success()/failure())


def _loose(value: Any) -> Any:
    """GitHub's comparison: strings ignore case; values of different types compare as numbers."""
    return value.lower() if isinstance(value, str) else value


def _number(value: Any) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except ValueError:
        return float("nan")


def _equal(a: Any, b: Any) -> bool:
    if type(a) is type(b):
        return _loose(a) == _loose(b)
    return _number(a) == _number(b)


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "")


def render(value: Any) -> str:
    """A value as GitHub writes it into a script or an env value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Parser:
    """Recursive descent over `||`, `&&`, `== !=`, `!`, literals, context paths and function calls."""

    def __init__(self, text: str, context: Context) -> None:
        self.text, self.context, self.pos = text, context, 0
        self.tokens: list[tuple[str, str]] = []
        while text[self.pos :].strip():
            match = TOKEN.match(text, self.pos)
            if not match:
                raise RehearsalError(f"cannot evaluate ${{{{ {text} }}}}: unknown syntax at {text[self.pos :]!r}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            self.pos = match.end()
        self.i = 0

    def fail(self, why: str) -> RehearsalError:
        return RehearsalError(f"cannot evaluate ${{{{ {self.text} }}}}: {why}")

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.tokens) or (expected and self.tokens[self.i][1] != expected):
            raise self.fail(f"expected {expected or 'more'}")
        self.i += 1
        return self.tokens[self.i - 1]

    def parse(self) -> Any:
        value = self.either()
        if self.i != len(self.tokens):
            raise self.fail(f"unexpected {self.peek()!r}")
        return value

    def either(self) -> Any:
        value = self.both()
        while self.peek() == "||":
            self.take()
            right = self.both()
            value = value if truthy(value) else right
        return value

    def both(self) -> Any:
        value = self.comparison()
        while self.peek() == "&&":
            self.take()
            right = self.comparison()
            value = right if truthy(value) else value
        return value

    def comparison(self) -> Any:
        value = self.unary()
        while self.peek() in ("==", "!="):
            op = self.take()[1]
            equal = _equal(value, self.unary())
            value = equal if op == "==" else not equal
        return value

    def unary(self) -> Any:
        if self.peek() == "!":
            self.take()
            return not truthy(self.unary())
        return self.primary()

    def primary(self) -> Any:
        kind, text = self.take()
        if text == "(":
            value = self.either()
            self.take(")")
            return value
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text)
        if kind != "name":
            raise self.fail(f"unexpected {text!r}")
        if self.peek() == "(":
            return self.call(text)
        if text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        return self.lookup(text)

    def call(self, name: str) -> Any:
        self.take("(")
        args = []
        while self.peek() != ")":
            args.append(self.either())
            if self.peek() == ",":
                self.take()
        self.take(")")
        functions: dict[str, Callable[..., Any]] = {
            "always": lambda: True,
            "success": lambda: not self.context.failed,
            "failure": lambda: self.context.failed,
            "cancelled": lambda: False,
            "startsWith": lambda s, p: render(s).lower().startswith(render(p).lower()),
            "contains": lambda s, p: render(p).lower() in render(s).lower(),
        }
        if name not in functions:
            raise self.fail(f"unknown function {name}()")
        try:
            return functions[name](*args)
        except TypeError:
            raise self.fail(f"{name}() takes other arguments than {len(args)}") from None

    def lookup(self, path: str) -> Any:
        head, *rest = path.split(".")
        if head not in ("github", "secrets", "vars", "env"):
            raise self.fail(f"unknown context {head!r} (known: github, secrets, vars, env)")
        value: Any = getattr(self.context, head)
        for key in rest:
            if not isinstance(value, dict) or key not in value:
                raise self.fail(f"{path} is not in the rehearsal's context: add it there")
            value = value[key]
        return value


def evaluate(expression: str, context: Context) -> Any:
    return _Parser(expression, context).parse()


EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


def substitute(text: str, context: Context) -> str:
    """Every `${{ expr }}` in `text` replaced by its value."""
    return EXPRESSION.sub(lambda m: render(evaluate(m.group(1), context)), text)


def condition(text: Any, context: Context) -> bool:
    """An `if:`: the whole value is an expression (with or without `${{ }}`), success() unless it says."""
    if text is None:
        return not context.failed
    text = str(text).strip()
    whole = EXPRESSION.fullmatch(text)
    expression = whole.group(1) if whole else text
    if "${{" in expression:
        raise RehearsalError(f"if: {text!r}: mixes text and ${{{{ }}}}")
    if not re.search(rf"\b({'|'.join(STATUS_FUNCTIONS)})\s*\(", expression):
        expression = f"success() && ({expression})"
    return truthy(evaluate(expression, context))


# --- run ------------------------------------------------------------------------------------------------


@dataclass
class Step:
    name: str
    outcome: str  # success, failure, skipped, or "delegated: <why>"
    seconds: float
    log: Path | None = None

    def tail(self, lines: int = 40) -> str:
        if self.log is None or not self.log.is_file():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Job:
    workflow: str
    name: str
    steps: list[Step]
    seconds: float
    workspace: Path

    @property
    def ok(self) -> bool:
        return all(s.outcome in ("success", "skipped") or s.outcome.startswith("delegated") for s in self.steps)

    def summary(self) -> str:
        lines = [f"{self.workflow} {self.name}: {'ok' if self.ok else 'FAILED'} in {self.seconds:.0f} s"]
        for s in self.steps:
            lines.append(f"  {s.outcome:<9} {s.seconds:7.1f} s  {s.name}")
            if s.outcome == "failure":
                lines.append("    " + s.tail().replace("\n", "\n    "))
        return "\n".join(lines)


# Variables of the calling process a runner would not have (the enclosing nox, pytest, CI and this repo).
FOREIGN = re.compile(
    r"^(MNIST_CT_|GITHUB_|RUNNER_|NOX|PYTEST_|VIRTUAL_ENV|PYTHONPYCACHEPREFIX|CONTAINERS_|REGISTRY_|UV_FIND_LINKS)"
)

GH_SHIM = '''\
#!{python}
"""gh stand-in: record argv; `release create TAG FILE... [--flag VALUE]...` needs its files and GH_TOKEN."""
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["REHEARSAL_RECORDS"] + "/gh.jsonl", "a") as out:
    out.write(json.dumps({{"argv": argv, "cwd": os.getcwd()}}) + "\\n")
if argv[:2] != ["release", "create"] or len(argv) < 3:
    sys.exit(f"gh (rehearsal): only `gh release create TAG FILES...` is known, not {{argv}}")
if not os.environ.get("GH_TOKEN"):
    sys.exit("gh (rehearsal): GH_TOKEN is not set; gh in Actions needs it")
files, rest = [], argv[3:]
while rest:
    arg = rest.pop(0)
    if not arg.startswith("-"):
        files.append(arg)
    elif "=" not in arg and rest:
        rest.pop(0)  # the option's value
missing = [f for f in files if not os.path.isfile(f)]
if missing:
    sys.exit(f"gh (rehearsal): no such file: {{', '.join(missing)}}")
'''


class Runner:
    """Runs jobs against `origin` (a bare repository) with the context's github/secrets/vars."""

    def __init__(self, home: Path, origin: Path, *, secrets: dict[str, str], vars: dict[str, str],
                 registry_host: str, env: dict[str, str] | None = None,
                 delegated: dict[str, str] | None = None) -> None:  # fmt: skip
        self.home, self.origin = home, origin
        self.secrets, self.vars = secrets, vars
        self.registry_host = registry_host
        self.extra_env = env or {}
        self.delegated = delegated or {}  # run script -> why it is not run here
        self.records = home / "records"
        self.uploads = self.records / "uploads"
        self.shims = home / "shims"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self._write_shims()

    def _write_shims(self) -> None:
        self.shims.mkdir(parents=True, exist_ok=True)
        conf = self.home / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "{self.registry_host}"\ninsecure = true\n')
        shims = {"sudo": '#!/bin/sh\nexec "$@"\n', "gh": GH_SHIM.format(python=sys.executable)}
        for tool in ("buildah", "skopeo"):
            real = shutil.which(tool)
            if real:
                shims[tool] = f'#!/bin/sh\nexec {real} --registries-conf {conf} "$@"\n'
        for name, text in shims.items():
            (self.shims / name).write_text(text)
            (self.shims / name).chmod(0o755)

    def gh_calls(self) -> list[dict[str, Any]]:
        path = self.records / "gh.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def base_env(self, workspace: Path, github: dict[str, Any], tool_path: Path) -> dict[str, str]:
        outer_venv = os.environ.get("VIRTUAL_ENV")
        path = [p for p in os.environ["PATH"].split(os.pathsep) if not (outer_venv and p.startswith(outer_venv))]
        env = {k: v for k, v in os.environ.items() if not FOREIGN.match(k)}
        temp, run = workspace.parent / "temp", workspace.parent / "run"
        temp.mkdir(parents=True, exist_ok=True)
        run.mkdir(mode=0o700, exist_ok=True)
        env.update({
            "PATH": os.pathsep.join([str(tool_path), str(self.shims), *path]),
            "CI": "true", "GITHUB_ACTIONS": "true", "RUNNER_OS": "Linux", "RUNNER_TEMP": str(temp),
            "GITHUB_WORKSPACE": str(workspace), "GITHUB_SHA": github["sha"], "GITHUB_REF": github["ref"],
            "GITHUB_REF_NAME": github["ref_name"], "GITHUB_REF_TYPE": github["ref_type"],
            "GITHUB_ACTOR": github["actor"], "GITHUB_REPOSITORY": github["repository"],
            "GITHUB_REPOSITORY_OWNER": github["repository_owner"], "GITHUB_EVENT_NAME": github["event_name"],
            "REHEARSAL_RECORDS": str(self.records),
            # Logins (buildah, skopeo: $XDG_RUNTIME_DIR/containers/auth.json, as on a runner) are the job's own:
            # a runner starts with none. Not REGISTRY_AUTH_FILE: docker-registry reads REGISTRY_* as its config.
            "XDG_RUNTIME_DIR": str(run),
        })  # fmt: skip
        env.update(self.extra_env)
        return env

    def github(self, ref: str, event: str) -> dict[str, Any]:
        sha = git(self.origin, "rev-parse", f"{ref}^{{commit}}").strip()
        kind = "tag" if ref.startswith("refs/tags/") else "branch"
        name = ref.split("/", 2)[2]
        owner = "mnist-ct"
        return {
            "ref": ref, "sha": sha, "ref_name": name, "ref_type": kind, "event_name": event,
            "actor": "rehearsal", "repository": f"{owner}/mnist-ct", "repository_owner": owner,
        }  # fmt: skip

    def run_job(self, workflow_path: Path, job_name: str, *, ref: str, event: str) -> Job:
        """Run one job of the workflow for `event` on `ref` (a ref of origin) in a new workspace."""
        started = time.monotonic()
        workflow = load_workflow(workflow_path)
        if not triggered(workflow, event, ref):
            raise RehearsalError(f"{workflow_path.name}: {event} on {ref} does not start this workflow")
        job = workflow["jobs"][job_name]
        context = Context(self.github(ref, event), self.secrets, self.vars)
        if not condition(job.get("if"), context):
            raise RehearsalError(f"{workflow_path.name} {job_name}: if: {job['if']!r} is false for {ref}")
        where = self.home / f"{workflow_path.stem}-{job_name}"
        workspace, tool_path, logs = where / "workspace", where / "tools" / "bin", where / "logs"
        logs.mkdir(parents=True)
        env = self.base_env(workspace, context.github, tool_path)
        limit = started + 60 * float(job.get("timeout-minutes", 360))
        defaults = {**workflow.get("defaults", {}).get("run", {}), **job.get("defaults", {}).get("run", {})}
        layers = [workflow.get("env", {}), job.get("env", {})]
        steps = []
        for index, spec in enumerate(job["steps"], 1):
            name = spec.get("name") or spec.get("uses") or spec["run"].strip().splitlines()[0]
            t0 = time.monotonic()
            context.env = {}  # the env context: the workflow's, job's and step's env: keys, in that order
            for layer in [*layers, spec.get("env", {})]:
                for key, value in layer.items():
                    context.env[key] = self.host(substitute(render(value), context))
            step_env = {**env, **context.env}
            if not condition(spec.get("if"), context):
                steps.append(Step(name, "skipped", 0.0))
                continue
            log = logs / f"{index:02d}.log"
            with log.open("w") as out:
                if "uses" in spec:
                    ok = self.uses(spec, context, workspace, tool_path, step_env, out)
                else:
                    script = self.host(substitute(spec["run"], context))
                    if script.strip() in self.delegated:
                        steps.append(Step(name, f"delegated: {self.delegated[script.strip()]}", 0.0, log))
                        continue
                    shell = spec.get("shell", defaults.get("shell"))
                    cwd = workspace / spec.get("working-directory", defaults.get("working-directory", "."))
                    ok = self.bash(script, shell, cwd, step_env, out, timeout=limit - time.monotonic(), index=index)
            steps.append(Step(name, "success" if ok else "failure", time.monotonic() - t0, log))
            context.failed = context.failed or not ok
        return Job(workflow_path.name, job_name, steps, time.monotonic() - started, workspace)

    def host(self, text: str) -> str:
        return text.replace("ghcr.io", self.registry_host)

    def bash(self, script: str, shell: str | None, cwd: Path, env: dict[str, str], out: Any, *,
             timeout: float, index: int) -> bool:  # fmt: skip
        if shell not in (None, "bash"):
            raise RehearsalError(f"shell: {shell} is not rehearsed (bash only)")
        file = Path(env["RUNNER_TEMP"]) / f"step-{index:02d}.sh"
        file.write_text(script)
        # GitHub's commands: no `shell:` is `bash -e {0}`; `shell: bash` adds pipefail and skips the rc files.
        flags = ["-e"] if shell is None else ["--noprofile", "--norc", "-eo", "pipefail"]
        argv = ["bash", *flags, str(file)]
        try:
            done = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            out.write("\nrehearsal: the job's timeout-minutes ran out\n")
            return False
        return done.returncode == 0

    def uses(self, spec: dict[str, Any], context: Context, workspace: Path, tool_path: Path,
             env: dict[str, str], out: Any) -> bool:  # fmt: skip
        action = spec["uses"].split("@")[0]
        if action not in USES:
            raise RehearsalError(f"uses: {spec['uses']} has no local equivalent in the rehearsal")
        with_ = {k: substitute(render(v), context) for k, v in (spec.get("with") or {}).items()}
        try:
            USES[action](self, with_, context, workspace, tool_path, env)
        except subprocess.CalledProcessError as e:
            out.write(f"{action}: {e}\n{e.stdout or ''}{e.stderr or ''}")
            return False
        except RehearsalStepFailed as e:
            out.write(f"{action}: {e}\n")
            return False
        out.write(f"{action}: done\n")
        return True


class RehearsalStepFailed(Exception):
    """A `uses:` step failed as the action would (e.g. upload-artifact's if-no-files-found: error)."""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def checkout(runner: Runner, with_: dict[str, str], context: Context, workspace: Path, *_: Any) -> None:
    """actions/checkout: init, fetch the ref (fetch-depth; 0 = everything), branch or detached checkout."""
    ref, depth = context.github["ref"], int(with_.get("fetch-depth", "1"))
    local = ref.replace("refs/heads/", "refs/remotes/origin/").replace("refs/pull/", "refs/remotes/pull/")
    workspace.mkdir(parents=True)
    git(workspace, "init", "-q")
    git(workspace, "remote", "add", "origin", f"file://{runner.origin}")
    refspecs = [f"+{ref}:{local}"]
    if depth == 0:
        refspecs += ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
        refspecs = list(dict.fromkeys(refspecs[1:] if ref.startswith(("refs/heads/", "refs/tags/")) else refspecs))
    git(workspace, "fetch", "-q", "--no-tags", *([f"--depth={depth}"] if depth else []), "origin", *refspecs)
    if ref.startswith("refs/heads/"):
        git(workspace, "checkout", "-q", "--force", "-B", context.github["ref_name"], local)
    else:
        git(workspace, "checkout", "-q", "--force", "--detach", local)


def setup_python(runner: Runner, with_: dict[str, str], context: Context, workspace: Path, tool_path: Path,
                 *_: Any) -> None:  # fmt: skip
    """actions/setup-python: this Python (the version asked for must be it), as a venv first on PATH."""
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if with_.get("python-version") != have:
        raise RehearsalStepFailed(f"python-version {with_.get('python-version')!r}: the rehearsal has {have}")
    subprocess.run([sys.executable, "-m", "venv", str(tool_path.parent)], check=True, capture_output=True)


def upload_artifact(runner: Runner, with_: dict[str, str], context: Context, workspace: Path, *_: Any) -> None:
    """actions/upload-artifact: copy `path` (one file or folder) into uploads/<name>/."""
    source = workspace / with_["path"]
    if not source.exists():
        if with_.get("if-no-files-found", "warn") == "error":
            raise RehearsalStepFailed(f"no files at {with_['path']}")
        return
    target = runner.uploads / with_.get("name", "artifact")
    target.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target / source.name, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target / source.name)


USES: dict[str, Callable[..., None]] = {
    "actions/checkout": checkout,
    "actions/setup-python": setup_python,
    "actions/upload-artifact": upload_artifact,
}
