"""A small KFP v2beta1 REST API on 127.0.0.1, enough for kfp.Client's release calls, recording requests.

This is the test boundary for `mnist-ct release`: no KFP cluster runs here. It implements the
endpoints kfp.Client uses for release, with the behaviour release depends on:

    GET    /apis/v2beta1/healthz
    GET    /apis/v2beta1/pipelines                        (filter: display_name EQUALS; namespace)
    POST   /apis/v2beta1/pipelines/upload                 (multipart `uploadfile`; creates the pipeline AND
                                                            a first version named after it, as KFP does)
    POST   /apis/v2beta1/pipelines/upload_version         (409 if the pipeline has a version of that name)
    GET    /apis/v2beta1/pipelines/{id}/versions          (paged: page_size, page_token)
    DELETE /apis/v2beta1/pipelines/{id}/versions/{vid}
    GET    /apis/v2beta1/experiments                      (filter: display_name EQUALS; namespace)
    POST   /apis/v2beta1/experiments
    POST   /apis/v2beta1/runs
    GET    /apis/v2beta1/recurringruns                    (experiment_id; filter: display_name EQUALS; paged;
                                                            answered as `recurringRuns`, the real json_name)
    POST   /apis/v2beta1/recurringruns                    (a version reference, a cron or periodic trigger,
                                                            max_concurrency 1..10, as the real server checks)
    DELETE /apis/v2beta1/recurringruns/{id}

Uploaded files must be a pipeline spec YAML (the real server rejects anything else), and a run
must reference an existing pipeline version. Anything else answers 404/400, so a client call this
server does not know fails loudly instead of passing.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

API = "/apis/v2beta1"
CREATED = "2026-11-28T20:00:00Z"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: bytes


@dataclass
class State:
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # pipeline id -> versions
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    recurring_runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: list[bytes] = field(default_factory=list)  # every uploaded pipeline file
    requests: list[Request] = field(default_factory=list)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _display_name_filter(query: dict[str, str]) -> str | None:
    if not query.get("filter"):
        return None
    predicates = json.loads(query["filter"]).get("predicates", [])
    if len(predicates) != 1:
        raise ApiError(400, "fake server: one predicate only")
    p = predicates[0]
    if p.get("operation") not in (1, "EQUALS") or p.get("key") not in ("display_name", "name"):
        raise ApiError(400, f"fake server: unsupported predicate {p}")
    return p.get("stringValue") or p.get("string_value")


class FakeKfp:
    def __init__(self) -> None:
        self.state = State()
        # (method, path after /apis/v2beta1) -> (status, message): answer that instead, to test error paths
        self.failures: dict[tuple[str, str], tuple[int, str]] = {}
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"api": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeKfp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids):04d}"

    def calls(self, method: str, suffix: str) -> list[Request]:
        return [r for r in self.state.requests if r.method == method and r.path == API + suffix]

    # -- endpoints ---------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> Any:
        s = self.state
        if (method, path.removeprefix(API)) in self.failures:
            raise ApiError(*self.failures[(method, path.removeprefix(API))])
        parts = path[len(API) :].strip("/").split("/") if path.startswith(API) else []
        if method == "GET" and parts == ["healthz"]:
            return {"commit_sha": "fake", "tag_name": "2.5.0", "multi_user": False}
        if method == "GET" and parts == ["pipelines"]:
            name = _display_name_filter(query)
            found = [p for p in s.pipelines.values() if name is None or p["display_name"] == name]
            found = [p for p in found if p.get("namespace", "") == query.get("namespace", "")]
            return {"pipelines": found, "total_size": len(found)} if found else {}
        if method == "POST" and parts == ["pipelines", "upload"]:
            content = self._uploaded(headers, body)
            name = query.get("name") or query.get("display_name")
            if not name:
                raise ApiError(400, "pipeline name is required")
            if any(p["display_name"] == name for p in s.pipelines.values()):
                raise ApiError(409, f"pipeline {name} already exists")
            pid = self.new_id("pipeline")
            pipeline = {
                "pipeline_id": pid,
                "name": name,
                "display_name": name,
                "description": query.get("description", ""),
                "created_at": CREATED,
                "namespace": query.get("namespace", ""),
            }
            s.pipelines[pid] = pipeline
            s.versions[pid] = [self._version(pid, name, query.get("description", ""), content)]
            return pipeline
        if method == "POST" and parts == ["pipelines", "upload_version"]:
            content = self._uploaded(headers, body)
            pid, name = query.get("pipelineid") or "", query.get("name") or query.get("display_name") or ""
            if pid not in s.pipelines:
                raise ApiError(404, f"pipeline {pid} not found")
            if not name:
                raise ApiError(400, "version name is required")
            if any(v["display_name"] == name for v in s.versions[pid]):
                raise ApiError(409, f"pipeline version {name} already exists")
            version = self._version(pid, name, query.get("description", ""), content)
            s.versions[pid].append(version)
            return version
        if len(parts) == 3 and parts[0] == "pipelines" and parts[2] == "versions" and method == "GET":
            pid = parts[1]
            if pid not in s.versions:
                raise ApiError(404, f"pipeline {pid} not found")
            name = _display_name_filter(query)
            versions = [v for v in s.versions[pid] if name is None or v["display_name"] == name]
            size = int(query.get("page_size") or 10)
            start = int(query.get("page_token") or 0)
            page = versions[start : start + size]
            token = str(start + size) if start + size < len(versions) else ""
            answer: dict[str, Any] = {"total_size": len(versions), "next_page_token": token}
            if page:
                answer["pipeline_versions"] = page
            return answer
        if len(parts) == 4 and parts[0] == "pipelines" and parts[2] == "versions" and method == "DELETE":
            pid, vid = parts[1], parts[3]
            before = len(s.versions.get(pid, []))
            s.versions[pid] = [v for v in s.versions.get(pid, []) if v["pipeline_version_id"] != vid]
            if len(s.versions[pid]) == before:
                raise ApiError(404, f"version {vid} not found")
            return {}
        if method == "GET" and parts == ["experiments"]:
            name = _display_name_filter(query)
            found = [
                e
                for e in s.experiments.values()
                if (name is None or e["display_name"] == name) and e["namespace"] == query.get("namespace", "")
            ]
            return {"experiments": found, "total_size": len(found)} if found else {}
        if method == "POST" and parts == ["experiments"]:
            doc = json.loads(body)
            eid = self.new_id("experiment")
            experiment = {
                "experiment_id": eid,
                "display_name": doc["display_name"],
                "description": doc.get("description") or "",
                "namespace": doc.get("namespace") or "",
                "created_at": CREATED,
                "storage_state": "AVAILABLE",
            }
            s.experiments[eid] = experiment
            return experiment
        if method == "POST" and parts == ["runs"]:
            doc = json.loads(body)
            if doc.get("experiment_id") not in s.experiments:
                raise ApiError(404, "experiment not found")
            ref = doc.get("pipeline_version_reference") or {}
            versions = s.versions.get(str(ref.get("pipeline_id")), [])
            if not any(v["pipeline_version_id"] == ref.get("pipeline_version_id") for v in versions):
                raise ApiError(404, "pipeline version not found")
            run = {
                "run_id": self.new_id("run"),
                "experiment_id": doc["experiment_id"],
                "display_name": doc["display_name"],
                "pipeline_version_reference": ref,
                "runtime_config": doc.get("runtime_config") or {},
                "state": "PENDING",
                "created_at": CREATED,
            }
            s.runs.append(run)
            return run
        if method == "GET" and parts == ["recurringruns"]:
            name = _display_name_filter(query)
            found = [
                r
                for r in s.recurring_runs.values()
                if (name is None or r["display_name"] == name)
                and (not query.get("experiment_id") or r["experiment_id"] == query["experiment_id"])
            ]
            size = int(query.get("page_size") or 10)
            start = int(query.get("page_token") or 0)
            token = str(start + size) if start + size < len(found) else ""
            listed: dict[str, Any] = {"total_size": len(found), "next_page_token": token}
            if found[start : start + size]:
                listed["recurringRuns"] = found[start : start + size]
            return listed
        if method == "POST" and parts == ["recurringruns"]:
            doc = json.loads(body)
            if doc.get("experiment_id") not in s.experiments:
                raise ApiError(404, "experiment not found")
            ref = doc.get("pipeline_version_reference") or {}
            versions = s.versions.get(str(ref.get("pipeline_id")), [])
            if not any(v["pipeline_version_id"] == ref.get("pipeline_version_id") for v in versions):
                raise ApiError(404, "pipeline version not found")
            trigger = doc.get("trigger") or {}
            if not (trigger.get("cron_schedule") or {}).get("cron") and not trigger.get("periodic_schedule"):
                raise ApiError(400, "a recurring run needs a cron or periodic schedule")
            if not 1 <= int(doc.get("max_concurrency") or 0) <= 10:
                raise ApiError(400, "Max concurrency of a recurring run must be at least 1 and at most 10")
            recurring = {
                **doc,
                "recurring_run_id": self.new_id("recurring"),
                "max_concurrency": str(doc["max_concurrency"]),  # int64: a JSON string, as the real server sends
                "status": "ENABLED" if doc.get("mode") == "ENABLE" else "DISABLED",
                "created_at": CREATED,
            }
            s.recurring_runs[recurring["recurring_run_id"]] = recurring
            return recurring
        if len(parts) == 2 and parts[0] == "recurringruns" and method == "DELETE":
            if s.recurring_runs.pop(parts[1], None) is None:
                raise ApiError(404, f"recurring run {parts[1]} not found")
            return {}
        raise ApiError(404, f"fake server: no route {method} {path}")

    def _uploaded(self, headers: Any, body: bytes) -> bytes:
        ctype = headers.get("Content-Type", "")
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
        files = [p for p in message.iter_parts() if p.get_param("name", header="content-disposition") == "uploadfile"]
        if len(files) != 1:
            raise ApiError(400, "expected one multipart field uploadfile")
        content = files[0].get_payload(decode=True)
        assert isinstance(content, bytes)
        try:
            doc = next(yaml.safe_load_all(content))
        except yaml.YAMLError:
            raise ApiError(400, "the uploaded file is not YAML") from None
        if not isinstance(doc, dict) or "pipelineInfo" not in doc or "root" not in doc:
            raise ApiError(400, "the uploaded file is not a pipeline spec")
        self.state.uploads.append(content)
        return content

    def _version(self, pid: str, name: str, description: str, content: bytes) -> dict[str, Any]:
        return {
            "pipeline_id": pid,
            "pipeline_version_id": self.new_id("version"),
            "name": name,
            "display_name": name,
            "description": description,
            "created_at": CREATED,
            "pipeline_spec": next(yaml.safe_load_all(content)),
        }


class _Handler(BaseHTTPRequestHandler):
    api: FakeKfp

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        pass

    def _serve(self) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.api.lock:
            self.api.state.requests.append(
                Request(self.command, url.path, query, self.headers.get("Authorization"), body)
            )
            try:
                status, answer = 200, self.api.handle(self.command, url.path, query, self.headers, body)
            except ApiError as e:
                status, answer = e.status, {"error": str(e), "code": e.status, "message": str(e)}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve
