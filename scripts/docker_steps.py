"""Read the Dockerfile, .dockerignore and docker-compose.yml for scripts/check-docker, so the check replays the
image's own steps instead of a copy of them that could drift.

Only the forms the Dockerfile uses are understood (`ENV K=V ...`, shell-form `RUN` and `COPY`, JSON-form
`ENTRYPOINT` and `HEALTHCHECK CMD`, a whitelist .dockerignore); anything else stops the check with a message
rather than being half-understood. Lists are printed NUL-separated for bash's `mapfile -d ''`.

    docker_steps.py python-version                 Python minor version of the base image, e.g. 3.11
    docker_steps.py context DEST                   copy the build context (what .dockerignore lets through) to DEST
    docker_steps.py stage STAGE CONTEXT DEST       replay STAGE's COPY lines (not --from) into DEST, its WORKDIR
    docker_steps.py runs STAGE [--map A=B ...]     the RUN commands STAGE runs in its WORKDIR, paths mapped
    docker_steps.py env STAGE [--map A=B ...]      STAGE's ENV as KEY=VALUE, paths mapped, $PATH from ours
    docker_steps.py user | volume                  the final stage's USER / VOLUME
    docker_steps.py entrypoint | healthcheck       the final stage's ENTRYPOINT / HEALTHCHECK CMD argv
    docker_steps.py compose FILE                   check the compose file's wiring (see check_compose)

STAGE is a stage's `AS` name, or `final` for the last stage.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


class CheckError(Exception):
    """A file is not in a form this checker understands, or is wired wrongly."""


@dataclass
class Stage:
    name: str
    image: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    stages: list[Stage] = []
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # comments may sit inside a continued instruction, as in Docker
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.partition(" ")
        keyword, args, logical = keyword.upper(), args.strip(), ""
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(name=name, image=parts[0]))
        elif not stages:
            if keyword != "ARG":
                raise CheckError(f"{keyword} before the first FROM")
        else:
            stages[-1].instructions.append((keyword, args))
    if not stages:
        raise CheckError("no FROM in the Dockerfile")
    return stages


def get_stage(stages: list[Stage], name: str) -> Stage:
    if name == "final":
        return stages[-1]
    for stage in stages:
        if stage.name == name:
            return stage
    raise CheckError(f"no stage named {name!r}")


def only(stage: Stage, keyword: str) -> str:
    values = [args for kw, args in stage.instructions if kw == keyword]
    if len(values) != 1:
        raise CheckError(f"expected one {keyword} in the final stage, found {len(values)}")
    return values[0]


def python_version(stages: list[Stage]) -> str:
    versions = set()
    for stage in stages:
        match = re.fullmatch(r"python:(\d+\.\d+)[\w.-]*", stage.image)
        if not match:
            raise CheckError(f"FROM {stage.image}: expected an official python:X.Y-… image")
        versions.add(match.group(1))
    if len(versions) != 1:
        raise CheckError(f"the stages use different Pythons: {sorted(versions)}")
    return versions.pop()


def parse_maps(pairs: list[str]) -> list[tuple[str, str]]:
    maps = []
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source.startswith("/"):
            raise CheckError(f"--map wants /IMAGE/PATH=HOST/PATH, got {pair!r}")
        maps.append((source.rstrip("/"), target.rstrip("/")))
    return maps


def map_paths(text: str, maps: list[tuple[str, str]]) -> str:
    """Replace image paths (as whole path prefixes) by their stand-ins on this machine."""
    for source, target in maps:
        text = re.sub(rf"(?<![\w.-]){re.escape(source)}(?![\w.-])", target.replace("\\", "\\\\"), text)
    return text


def workdir_index(stage: Stage) -> int:
    indexes = [i for i, (kw, _) in enumerate(stage.instructions) if kw == "WORKDIR"]
    if len(indexes) != 1:
        raise CheckError(f"stage {stage.name or 'final'}: expected one WORKDIR, found {len(indexes)}")
    return indexes[0]


def run_commands(stage: Stage, maps: list[tuple[str, str]]) -> list[str]:
    """Shell-form RUN commands after the stage's WORKDIR (those before it set up the system: users, folders)."""
    commands = []
    for keyword, args in stage.instructions[workdir_index(stage) + 1 :]:
        if keyword != "RUN":
            continue
        if args.startswith("["):
            raise CheckError(f"RUN {args}: only the shell form is replayed")
        while args.startswith("--"):  # BuildKit flags such as --mount=type=cache,...: not part of the command
            _flag, _, args = args.partition(" ")
            args = args.lstrip()
        commands.append(map_paths(args, maps))
    return commands


def stage_env(stage: Stage, maps: list[tuple[str, str]]) -> list[str]:
    env: dict[str, str] = {}
    for keyword, args in stage.instructions:
        if keyword != "ENV":
            continue
        for item in shlex.split(args):
            key, sep, value = item.partition("=")
            if not sep:
                raise CheckError(f"ENV {args}: only the ENV KEY=VALUE form is understood")
            value = value.replace("${PATH}", "$PATH").replace("$PATH", os.environ.get("PATH", ""))
            if "$" in value:
                raise CheckError(f"ENV {key}: only $PATH is expanded here")
            env[key] = map_paths(value, maps)
    return [f"{key}={value}" for key, value in env.items()]


def json_argv(text: str, what: str) -> list[str]:
    try:
        argv = json.loads(text)
    except json.JSONDecodeError:
        argv = None
    if not isinstance(argv, list) or not argv or not all(isinstance(arg, str) for arg in argv):
        raise CheckError(f"{what}: expected the JSON (exec) form, got {text}")
    return argv


def healthcheck_argv(stage: Stage) -> list[str]:
    args = only(stage, "HEALTHCHECK")
    while args.startswith("--"):
        _option, _, args = args.partition(" ")
        args = args.lstrip()
    keyword, _, command = args.partition(" ")
    if keyword.upper() != "CMD":
        raise CheckError(f"HEALTHCHECK {args}: expected CMD [...]")
    return json_argv(command.strip(), "HEALTHCHECK CMD")


def ignore_whitelist(path: Path = DOCKERIGNORE) -> tuple[list[str], list[str]]:
    """The .dockerignore's kept paths ("!x") and the patterns excluded within them ("**/x")."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines or lines[0] != "*":
        raise CheckError(".dockerignore: expected a whitelist that starts with '*'")
    kept, excluded = [], []
    for line in lines[1:]:
        if line.startswith("!"):
            kept.append(line[1:].strip("/"))
        elif line.startswith("**/"):
            excluded.append(line[3:])
        else:
            raise CheckError(f".dockerignore: {line!r} is neither '!path' nor '**/pattern'")
    return kept, excluded


def copy_context(dest: Path) -> None:
    kept, excluded = ignore_whitelist()

    def ignore(_folder: str, names: list[str]) -> set[str]:
        return {name for name in names if any(fnmatch.fnmatchcase(name, pattern) for pattern in excluded)}

    for name in kept:
        source, target = ROOT / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore, symlinks=True)
        elif source.exists():
            shutil.copy2(source, target)
        else:
            raise CheckError(f".dockerignore keeps {name}, which does not exist")


def replay_copies(stage: Stage, context: Path, dest: Path) -> None:
    """COPY lines from the build context into DEST, which stands for the stage's WORKDIR."""
    after_workdir = False
    for keyword, args in stage.instructions:
        after_workdir = after_workdir or keyword == "WORKDIR"
        if keyword != "COPY" or "--from=" in args:
            continue
        if not after_workdir:
            raise CheckError(f"COPY {args}: copies before the WORKDIR are not replayed")
        parts = [part for part in args.split() if not part.startswith("--")]
        *sources, target = parts
        if target.startswith("/"):
            raise CheckError(f"COPY {args}: only destinations relative to the WORKDIR are replayed")
        for source in sources:
            origin = context / source
            if not origin.exists():
                raise CheckError(f"COPY {source}: not in the build context (check .dockerignore)")
            destination = dest / target
            if origin.is_dir():
                shutil.copytree(origin, destination, dirs_exist_ok=True, symlinks=True)
            else:
                if target.endswith("/"):
                    destination = destination / origin.name
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, destination)


def check_compose(path: Path, stages: list[Stage]) -> str:
    """The app is built from here, waits for a healthy database, keeps /data on a named volume."""
    import yaml  # in the check's tools venv, not the app's

    compose = yaml.safe_load(path.read_text())
    services = compose.get("services") or {}
    app, db = services.get("app"), services.get("db")
    if not app or not db:
        raise CheckError(f"{path.name}: expected services app and db, found {sorted(services)}")
    problems = []
    if app.get("build") not in (".", {"context": "."}):
        problems.append("app is not built from this directory")
    if (app.get("depends_on") or {}).get("db", {}).get("condition") != "service_healthy":
        problems.append("app does not wait for db with condition service_healthy")
    if not (db.get("healthcheck") or {}).get("test"):
        problems.append("db has no healthcheck")
    if not app.get("healthcheck") and not any(kw == "HEALTHCHECK" for kw, _ in get_stage(stages, "final").instructions):
        problems.append("app has no healthcheck (neither in the compose file nor in the image)")
    url = str((app.get("environment") or {}).get("DATABASE_URL", ""))
    if not url.startswith("postgresql+asyncpg://") or "@db:" not in url:
        problems.append(f"app's DATABASE_URL does not point at the db service: {url!r}")
    volume = only(get_stage(stages, "final"), "VOLUME")
    declared = compose.get("volumes") or {}
    for name, service, target in (("app", app, volume), ("db", db, "/var/lib/postgresql/data")):
        mounts = [str(m) for m in service.get("volumes") or []]
        named = [m.split(":")[0] for m in mounts if m.split(":")[1:2] == [target]]
        if not named or named[0] not in declared:
            problems.append(f"{name}: {target} is not on a named volume declared under volumes")
    # Scale-out (README, "Scaling out"): a second web replica and a voice worker on the same database and volume.
    replica, worker = services.get("app2") or {}, services.get("worker") or {}
    for name, service in (("app2", replica), ("worker", worker)):
        if (service.get("environment") or {}).get("DATABASE_URL") != url:
            problems.append(f"{name} does not share app's DATABASE_URL")
        if [str(m) for m in service.get("volumes") or []] != [str(m) for m in app.get("volumes") or []]:
            problems.append(f"{name} does not mount app's volumes")
    if (app.get("environment") or {}).get("VOICE_RUNNER") != "off" or (replica.get("environment") or {}).get(
        "VOICE_RUNNER"
    ) != "off":
        problems.append("the web replicas should leave voice turns to the worker (VOICE_RUNNER: off)")
    if worker.get("command") != ["python", "-m", "webapp.worker"]:
        problems.append("worker does not run python -m webapp.worker")
    if problems:
        raise CheckError(f"{path.name}: " + "; ".join(problems))
    return (
        f"{path.name}: app waits for a healthy db; {volume} and the database are on named volumes; app2 and the "
        "worker share them"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--map", action="append", default=[], help="/image/path=/host/path")
    options = parser.parse_args()
    stages = parse_dockerfile()
    command, args, maps = options.command, options.args, parse_maps(options.map)
    final = get_stage(stages, "final")
    out: str | list[str]
    if command == "python-version":
        out = python_version(stages)
    elif command == "context":
        copy_context(Path(args[0]))
        return
    elif command == "stage":
        replay_copies(get_stage(stages, args[0]), Path(args[1]), Path(args[2]))
        return
    elif command == "runs":
        out = run_commands(get_stage(stages, args[0]), maps)
    elif command == "env":
        out = stage_env(get_stage(stages, args[0]), maps)
    elif command in ("user", "volume"):
        out = only(final, command.upper())
    elif command == "entrypoint":
        out = json_argv(only(final, "ENTRYPOINT"), "ENTRYPOINT")
    elif command == "healthcheck":
        out = healthcheck_argv(final)
    elif command == "compose":
        out = check_compose(Path(args[0]), stages)
    else:
        parser.error(f"unknown command {command}")
    sys.stdout.write("".join(f"{item}\0" for item in out) if isinstance(out, list) else f"{out}\n")


if __name__ == "__main__":
    try:
        main()
    except CheckError as exc:
        sys.exit(f"check-docker: {exc}")
