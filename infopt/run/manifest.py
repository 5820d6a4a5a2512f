"""A run's ``run.json`` (command, settings, environment, each notebook's status, every earlier attempt),
rewritten atomically, and the lock that keeps one runner per run folder."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shlex
import socket
import time
from pathlib import Path

from infopt.devices import device_name
from infopt.run.clock import utc_now
from infopt.run.plan import Job, Plan, RunnerError

SCHEMA_VERSION = 1


def write_json_atomic(obj: dict, path: Path) -> None:
    from infopt.results import save_json

    save_json(obj, path, overwrite=True)


class Manifest:
    """``run.json``: command, settings, environment and each notebook's status, rewritten atomically."""

    def __init__(self, plan: Plan, argv: list[str]):
        from infopt import env

        self.plan = plan
        self.path = plan.layout.manifest
        previous = plan.previous or {}
        environment = env.collect()
        self.data = {
            "schema_version": SCHEMA_VERSION,
            "run_name": plan.run_dir.name,
            "status": "running",
            "command": argv,
            "command_line": " ".join(shlex.quote(a) for a in argv),
            "started_utc": utc_now(),
            "finished_utc": None,
            "duration_s": None,
            # a single-target run keeps the fields it always had; "targets" lists every target (one or more)
            **({"device": {k: plan.targets[0].as_dict()[k] for k in ("device", "requested", "reason")},
                "device_label": plan.device_label} if len(plan.targets) == 1 else {}),
            "targets": [target.as_dict() for target in plan.targets],
            "settings": plan.settings,
            "environment": environment,
            "git_commit": environment.get("git_commit"),
            "notebooks": [],
        }
        entries = [entry for entry in previous.get("notebooks", []) if isinstance(entry, dict) and "key" in entry]
        if previous:  # every earlier attempt stays on record, with what each of its notebooks did
            attempt = {k: previous.get(k) for k in ("command_line", "started_utc", "finished_utc", "status",
                                                    "failure_reason")}
            attempt["notebooks"] = [{k: entry.get(k) for k in ("key", "status", "duration_s", "error")}
                                    for entry in entries]
            earlier = previous.get("previous_attempts")
            self.data["previous_attempts"] = (earlier if isinstance(earlier, list) else []) + [attempt]
        self.previous_jobs = {entry["key"]: entry for entry in entries}
        planned = {job.key for job in plan.jobs}
        #: jobs of the run this plan does not hold (e.g. from an older runner): kept as they were
        self.other_jobs = [entry for entry in entries if entry["key"] not in planned]

    def job_entry(self, job: Job) -> dict:
        """One notebook's record; a model notebook's names its target, and once it ran, the host (and the Ray
        node, in ``placement``) that ran it and the hardware behind its device (``device_name``)."""
        target = {}
        if job.target is not None:
            before = self.previous_jobs.get(job.key) or {}
            host = (job.placement or {}).get("host") or job.host or (before.get("host") if job.status == "skipped"
                                                                     else None)
            name = (job.placement or {}).get("device_name")
            if name is None and host is not None and not job.placement:  # ran here: this machine's environment
                name = before.get("device_name") if job.status == "skipped" else \
                    device_name(self.data["environment"], job.target.device)
            target = {"target": job.target.text, "host": host, "device_name": name}
        return {
            "key": job.key, "notebook": job.notebook, "model": job.model,
            "device": job.target.label if job.target else self.plan.device_label,
            **target,
            "path": str(job.output.relative_to(self.plan.run_dir)),
            "html": str(job.output.with_suffix(".html").relative_to(self.plan.run_dir)),
            "parameters": job.parameters, "status": job.status, "duration_s": job.duration_s,
            "started_utc": job.started_utc, "error": job.error,
            **({"placement": job.placement} if job.placement else {}),
        }

    def save(self, status: str | None = None) -> None:
        if status:
            self.data["status"] = status
            self.data["finished_utc"] = utc_now()
            started = _dt.datetime.fromisoformat(self.data["started_utc"])
            self.data["duration_s"] = round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1)
        self.data["notebooks"] = [self.job_entry(job) for job in self.plan.jobs] + self.other_jobs
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.data, self.path)


class RunLock:
    """``<run>/.run.lock``: one runner per run folder at a time.

    The lock holds the owner's process id and host. A lock whose process is gone (same host) is stale and
    taken over; a live one makes a second runner stop with one line. It is removed when the run ends.
    """

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def _owner(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _alive(owner: dict) -> bool:
        pid = owner.get("pid")
        if not isinstance(pid, int) or owner.get("host") != socket.gethostname():
            return True  # another host's (or a half-written) lock: cannot tell, so respect it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def acquire(self) -> "RunLock":
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started_utc": utc_now()})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:
                    continue  # released meanwhile
                if owner and not self._alive(owner):
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()  # stale: its runner is gone
                    continue
                if not owner and time.time() - self._mtime() > 10:
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()  # unreadable for long: a crash while writing it
                    continue
                who = f"process {owner.get('pid', '?')} on {owner.get('host', '?')}" if owner else "another runner"
                raise RunnerError(f"Run folder {self.path.parent} is in use by {who} (lock file {self.path}); "
                                  f"wait for it to finish, or delete the lock file if that runner is gone.")
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(record + "\n")
            self.held = True
            return self
        raise RunnerError(f"Could not take the lock {self.path}: it keeps changing.")

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return time.time()

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner and owner.get("pid") == os.getpid():
                with contextlib.suppress(OSError):
                    self.path.unlink()
            self.held = False


def mark_resumable(plan: Plan, manifest: Manifest) -> None:
    """Skip notebooks that already succeeded with the same parameters; re-runs may overwrite stale files."""
    for job in plan.jobs:
        before = manifest.previous_jobs.get(job.key)
        same = before is not None and isinstance(before.get("parameters"), dict) and \
            {k: v for k, v in before["parameters"].items()
                                       if k not in ("output_dir", "results_dir", "overwrite")} \
            == job.comparable_parameters()
        if job.model is not None and same and before.get("status") in ("succeeded", "skipped") \
                and job.output.is_file():
            job.status, job.duration_s, job.error = "skipped", before.get("duration_s"), None
        elif job.model is not None and before is not None:
            job.parameters["overwrite"] = True  # stale results of a failed attempt or of other parameters


__all__ = ["Manifest", "RunLock", "SCHEMA_VERSION", "mark_resumable", "write_json_atomic"]
