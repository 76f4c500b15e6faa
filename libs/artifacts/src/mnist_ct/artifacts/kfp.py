"""The Kubeflow Pipelines v2 outputs a step writes itself: typed output artifacts, their metadata, the images.

In a KFP v2 container component the launcher substitutes two placeholders on the command line:

- `{{$}}` (`--executor-input JSON`): the task's ExecutorInput. Its `outputs.outputFile` is where the step writes
  an ExecutorOutput (`{"artifacts": {NAME: {"artifacts": [{"name", "uri", "metadata"}]}}}`); the launcher
  merges that metadata into the output artifacts it records in ML Metadata, which the KFP UI shows
  (metrics, the confusion matrix) and lineage queries read.
- `{{$.outputs.artifacts['NAME'].path}}` (`--output-artifact NAME=PATH`): the local file the launcher uploads
  as artifact NAME's content.

A step declares its artifacts (NAME -> schema title), adds both options with `add_kfp_arguments`, builds
`KfpOutputs.from_args` with its other options (every value checked before any work: bad usage exit 2, a
read-only place exit 5) and writes inside `KfpOutputs.writing(run_id)`:

    with options.kfp.writing(paths.run_id) as out:
        manifest = write_dataset(...)                     # the step's own artifact, published first
        out.add("dataset", manifest_bytes, {"sha256": manifest.digest, ...})

Each file is written beside its place (fsynced) when added and moved into place, the ExecutorOutput last,
only when the block ends without error: a failing step leaves no output file and no ExecutorOutput.

`MNIST_CT_IMAGES` (IMAGES_ENV): JSON `{"<step>": "<image ref>", ...}`, set on every task by the compiled
pipeline from its image lock; `step_images()` is the one reader. Absent (a step run by hand): `{}`.
`MNIST_CT_STEP_VERSIONS` (VERSIONS_ENV): `{"<step>": "<version>", ...}` likewise, read by `step_versions()`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .manifest import Producer, fsync_dir, os_errors_named

IMAGES_ENV = "MNIST_CT_IMAGES"
VERSIONS_ENV = "MNIST_CT_STEP_VERSIONS"
EXECUTOR_INPUT_OPTION = "--executor-input"
OUTPUT_ARTIFACT_OPTION = "--output-artifact"
COMMON_METADATA = ("step", "step_version", "image", "run_id")  # set on every artifact by `writing`
_PLACEHOLDER = "pass KFP's executor input placeholder {{$}}"


def _steps_env(name: str, what: str, kind: str, environ: Mapping[str, str] | None) -> dict[str, str]:
    """{"<step>": "<value>"} from environment variable `name`: {} when absent or empty (a step run by hand).

    Malformed (not JSON, not an object of non-empty strings without spaces): UsageError naming the variable.
    """
    text = (os.environ if environ is None else environ).get(name, "")
    if not text.strip():
        return {}
    fix = f'set it to {{"<step>": "<{what}>", ...}} as the compiled pipeline does, or unset it'
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        reason = str(e) if isinstance(e, ValueError) else "nested too deeply"
        raise UsageError(f"environment variable {name} is not JSON ({reason}); {fix}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"environment variable {name} must be a JSON object, got {type(doc).__name__}; {fix}")
    for step, value in doc.items():
        printable = isinstance(value, str) and value.isprintable() and not any(c.isspace() for c in value)
        if not step or not value or not printable:
            raise UsageError(f"environment variable {name}: step {step!r} has {what} {value!r}, not {kind}; {fix}")
    return doc


def step_images(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every step's image reference from MNIST_CT_IMAGES ({} when unset: a step run by hand)."""
    return _steps_env(IMAGES_ENV, "image", "an image reference", environ)


def step_versions(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every step's package version from MNIST_CT_STEP_VERSIONS ({} when unset: a step run by hand).

    The compiled pipeline sets it on every task from the image lock, so a step can tell whether the code
    that made the champion is the code of this run (preprocess's skip-if-unchanged) and the deployed model
    records which versions made it.
    """
    return _steps_env(VERSIONS_ENV, "version", "a version", environ)


def file_uri(path: Path) -> str:
    """`file://` + the absolute path: where an artifact lives on its volume, for artifact metadata."""
    return Path(path).absolute().as_uri()


def check_output_file(option: str, path: Path) -> Path:
    """An output file given on the command line: not a folder, and no file where a folder must be (UsageError)."""
    path = Path(path)
    named = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise UsageError(f"{named}: is a folder; give the path of the file to write")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{named}: {parent} is a file, not a folder; give a path in a folder")
            break
    return path


def check_writable(path: Path) -> None:
    """Refuse an output file whose volume is read-only or not ours: an OSError naming it (exit 5), before any work."""
    existing = next(p for p in (Path(path).parent, *Path(path).parent.parents) if p.exists())
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def check_distinct(files: Mapping[str, Path]) -> None:
    """Output files by the option that names them: two options naming one file is a UsageError.

    One file: the same entry of the same folder, however spelt (`a/../x`, a symlinked folder); each file is
    moved into place by its own rename, so the second would silently replace the first.
    """
    seen: dict[Path, str] = {}
    for option, path in files.items():
        where = Path(path).absolute().parent.resolve() / Path(path).name
        if where in seen:
            raise UsageError(f"{option} and {seen[where]} are both {path}; give each output its own file")
        seen[where] = option


def executor_output_path(executor_input: Mapping[str, Any]) -> Path:
    """Where KFP wants this task's ExecutorOutput: the executor input's outputs.outputFile."""
    outputs = executor_input.get("outputs") or {}
    path = outputs.get("outputFile") or outputs.get("output_file")
    if not isinstance(path, str) or not path:
        raise UsageError(f"{EXECUTOR_INPUT_OPTION} has no outputs.outputFile; {_PLACEHOLDER}")
    return Path(path)


def _schema_title(artifact: Mapping[str, Any]) -> Any:
    kind = artifact.get("type") or {}
    return kind.get("schemaTitle") or kind.get("schema_title")


def input_artifacts(executor_input: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The output artifacts the executor input declares: NAME -> its first RuntimeArtifact (name, type, uri)."""
    listed = (executor_input.get("outputs") or {}).get("artifacts") or {}
    return {
        name: (entry or {}).get("artifacts", [{}])[0]
        for name, entry in listed.items()
        if (entry or {}).get("artifacts")
    }


def parse_executor_input(text: str, declared: Mapping[str, str]) -> dict[str, Any]:
    """KFP's ExecutorInput, checked whole against the step's declared artifacts (UsageError naming the option)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        reason = str(e) if isinstance(e, ValueError) else "nested too deeply"
        raise UsageError(f"{EXECUTOR_INPUT_OPTION} is not JSON ({reason}); {_PLACEHOLDER}") from None
    return check_executor_input(doc, declared)


def check_executor_input(doc: Any, declared: Mapping[str, str]) -> dict[str, Any]:
    """The parsed ExecutorInput `doc`, refused (UsageError) unless this step can write what it asks for."""
    if not isinstance(doc, dict):
        raise UsageError(f"{EXECUTOR_INPUT_OPTION} must be a JSON object (KFP's ExecutorInput); {_PLACEHOLDER}")
    outputs = doc.get("outputs")
    if outputs is not None and not isinstance(outputs, dict):
        raise UsageError(f"{EXECUTOR_INPUT_OPTION}: outputs must be an object; {_PLACEHOLDER}")
    artifacts = (outputs or {}).get("artifacts")
    if artifacts is None:
        artifacts = {}
    if not isinstance(artifacts, dict) or not all(_artifact_list(listed) for listed in artifacts.values()):
        raise UsageError(
            f'{EXECUTOR_INPUT_OPTION}: outputs.artifacts must map each name to {{"artifacts": [{{"type": {{...}}}}]}}; '
            + _PLACEHOLDER
        )
    for name, artifact in input_artifacts(doc).items():
        if name not in declared:
            raise UsageError(
                f"{EXECUTOR_INPUT_OPTION}: output artifact {name!r} is not one this step writes "
                f"({_declared_text(declared)}); fix the pipeline's component"
            )
        title = _schema_title(artifact)
        if title is not None and title != declared[name]:
            raise UsageError(
                f"{EXECUTOR_INPUT_OPTION}: output artifact {name!r} has type {title!r}, but this step writes a "
                f"{declared[name]}; fix the pipeline's component"
            )
    check_output_file(f"{EXECUTOR_INPUT_OPTION} outputs.outputFile", executor_output_path(doc))
    return doc


def _artifact_list(listed: Any) -> bool:
    if listed is None:
        return True
    if not isinstance(listed, dict) or not isinstance(listed.get("artifacts", []), list):
        return False
    return all(isinstance(a, dict) and isinstance(a.get("type") or {}, dict) for a in listed.get("artifacts", []))


def _declared_text(declared: Mapping[str, str]) -> str:
    return "it writes " + ", ".join(f"{name} ({title})" for name, title in declared.items())


def parse_output_artifact(text: str, declared: Mapping[str, str]) -> tuple[str, Path]:
    """`NAME=PATH` of --output-artifact: NAME one the step declares, PATH a file to write (UsageError)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise UsageError(f"{OUTPUT_ARTIFACT_OPTION} {text!r}: expected NAME=PATH ({_declared_text(declared)})")
    if name not in declared:
        raise UsageError(
            f"{OUTPUT_ARTIFACT_OPTION} {text!r}: this step has no output artifact {name!r} ({_declared_text(declared)})"
        )
    return name, check_output_file(f"{OUTPUT_ARTIFACT_OPTION} {name}", Path(path))


def add_kfp_arguments(parser: argparse.ArgumentParser, declared: Mapping[str, str]) -> None:
    """`--executor-input JSON` and `--output-artifact NAME=PATH` for the step's declared artifacts (NAME -> type)."""

    def argument_type(check: Any) -> Any:
        def parse(text: str) -> Any:
            try:
                return check(text, declared)
            except UsageError as e:  # argparse names the option itself
                message = str(e).removeprefix(EXECUTOR_INPUT_OPTION).removeprefix(OUTPUT_ARTIFACT_OPTION)
                raise argparse.ArgumentTypeError(message.lstrip(": ")) from None

        parse.__name__ = check.__name__
        return parse

    group = parser.add_argument_group("Kubeflow Pipelines outputs (each optional; parent folders are created)")
    group.add_argument(
        EXECUTOR_INPUT_OPTION,
        type=argument_type(parse_executor_input),
        metavar="JSON",
        help="KFP v2 executor input (pass the placeholder {{$}}): the ExecutorOutput with the metadata of this step's "
        "output artifacts is written to its outputs.outputFile",
    )
    group.add_argument(
        OUTPUT_ARTIFACT_OPTION,
        type=argument_type(parse_output_artifact),
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="write output artifact NAME's file to PATH (pass {{$.outputs.artifacts['NAME'].path}}); repeatable; "
        + _declared_text(declared),
    )


@dataclass(frozen=True)
class KfpOutputs:
    """What a step writes for KFP (its declared artifacts, the executor input, the artifact files), checked whole.

    `images` is MNIST_CT_IMAGES as read (and checked) with the options: this step's image goes into every
    artifact's metadata, and analysis and deploy record all of them.
    """

    step: str
    declared: Mapping[str, str]  # artifact name -> schema title, e.g. {"dataset": "system.Dataset"}
    executor_input: Mapping[str, Any] | None = None
    artifact_paths: Mapping[str, Path] = field(default_factory=dict)
    images: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_args(cls, step: str, declared: Mapping[str, str], args: argparse.Namespace) -> KfpOutputs:
        paths: dict[str, Path] = {}
        for name, path in args.output_artifact:
            if name in paths:
                raise UsageError(f"{OUTPUT_ARTIFACT_OPTION} {name} is given twice; give each artifact one path")
            paths[name] = path
        return cls(step, declared, args.executor_input, paths, step_images())

    def __post_init__(self) -> None:
        if self.executor_input is not None:
            object.__setattr__(self, "executor_input", check_executor_input(dict(self.executor_input), self.declared))
        for name, path in self.artifact_paths.items():
            parse_output_artifact(f"{name}={path}", self.declared)
        files = self.output_files()
        check_distinct(files)
        for path in files.values():
            check_writable(path)

    def output_files(self) -> dict[str, Path]:
        """Every file this writes, by the option that names it (for checks against a step's other outputs)."""
        files = {f"{OUTPUT_ARTIFACT_OPTION} {name}": Path(path) for name, path in self.artifact_paths.items()}
        if self.executor_input is not None:
            files[f"{EXECUTOR_INPUT_OPTION} outputs.outputFile"] = executor_output_path(self.executor_input)
        return files

    @property
    def image(self) -> str | None:
        """This step's image reference, None when MNIST_CT_IMAGES does not name it."""
        return self.images.get(self.step)

    def required(self) -> set[str]:
        """The artifacts the step must add: those with a path, and those the executor input declares."""
        named = set(self.artifact_paths)
        if self.executor_input is not None:
            named |= set(input_artifacts(self.executor_input))
        return named

    @contextlib.contextmanager
    def writing(self, run_id: str) -> Iterator[ArtifactWriter]:
        """Stage the artifacts added in the block; move them into place, the ExecutorOutput last, when it succeeds."""
        writer = ArtifactWriter(self, run_id)
        try:
            yield writer
            writer.commit()
        finally:
            writer.discard()


class ArtifactWriter:
    """The files one `KfpOutputs.writing` block stages; see there."""

    def __init__(self, outputs: KfpOutputs, run_id: str) -> None:
        self.outputs = outputs
        self.common = {
            "step": outputs.step,
            "step_version": Producer.of(outputs.step).version,
            "image": outputs.image,
            "run_id": run_id,
        }
        self.metadata: dict[str, dict[str, Any]] = {}
        self._staged: dict[Path, Path] = {}  # final path -> its fsynced temporary sibling
        self._made: list[Path] = []  # folders made for them, removed again unless committed
        self._placed: list[Path] = []

    def add(self, name: str, data: bytes, metadata: Mapping[str, Any]) -> None:
        """Artifact `name`: its file's content (written if --output-artifact named a path) and its metadata."""
        if name not in self.outputs.declared:
            raise ValueError(f"{self.outputs.step} declares no output artifact {name!r}")
        clash = set(metadata) & set(COMMON_METADATA)
        if clash:
            raise ValueError(f"artifact metadata may not set {sorted(clash)} itself")
        self.metadata[name] = {**metadata, **self.common}
        path = self.outputs.artifact_paths.get(name)
        if path is not None:
            self.file(Path(path), data)
        if self.outputs.executor_input is not None:
            # Rewritten on every add, so once the step's last artifact is added every byte is on disk.
            self.file(executor_output_path(self.outputs.executor_input), self._executor_output())

    def file(self, path: Path, data: bytes) -> None:
        """Stage any other output file (an output parameter, a v1 metrics file) with the artifacts."""
        path = Path(path)
        previous = self._staged.pop(path, None)
        if previous is not None:
            previous.unlink(missing_ok=True)
        missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
        with os_errors_named(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.extend(missing)
            temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
            self._staged[path] = temporary  # before the write: a full disk leaves no partial temporary file
            with open(temporary, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

    def _executor_output(self) -> bytes:
        declared = input_artifacts(self.outputs.executor_input or {})
        artifacts: dict[str, Any] = {}
        for name, metadata in self.metadata.items():
            if name not in declared and name not in self.outputs.artifact_paths:
                continue
            runtime = {key: declared.get(name, {})[key] for key in ("name", "uri") if declared.get(name, {}).get(key)}
            artifacts[name] = {"artifacts": [{**runtime, "metadata": metadata}]}
        # allow_nan=False: a NaN has no JSON form, and protobuf's Struct parser would refuse the file.
        return (json.dumps({"artifacts": artifacts}, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()

    def commit(self) -> None:
        missing = sorted(self.outputs.required() - set(self.metadata))
        if missing:
            raise RuntimeError(f"{self.outputs.step} did not write its output artifacts {missing}")
        last = executor_output_path(self.outputs.executor_input) if self.outputs.executor_input is not None else None
        order = sorted(self._staged, key=lambda p: p == last)  # the ExecutorOutput goes into place last
        try:
            for path in order:
                with os_errors_named(path):
                    os.replace(self._staged[path], path)
                    self._placed.append(path)
                    fsync_dir(path.parent)
        except BaseException:
            for path in self._placed:  # all or nothing
                path.unlink(missing_ok=True)
            raise
        self._staged.clear()
        self._made.clear()

    def discard(self) -> None:
        for temporary in self._staged.values():
            temporary.unlink(missing_ok=True)
        self._staged.clear()
        for folder in sorted(set(self._made), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._made.clear()
