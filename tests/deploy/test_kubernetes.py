"""deploy/kubernetes/: every manifest validates offline against the Kubernetes schemas, and runs real commands.

The schemas ship inside the kubernetes-validate package (no network). The manifests have never been
applied to a cluster (there is none here); this checks their shape, not their behaviour.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate as kv
import pytest
import yaml

from sweep.cli import main
from tests.procs import ROOT

FOLDER = ROOT / "deploy" / "kubernetes"
VERSION = "1.30.0"  # the oldest Kubernetes release still supported upstream when these were written


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(FOLDER.glob("*.yaml")):
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name)


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize(("file", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifest_matches_the_kubernetes_schema(file: str, doc: dict[str, Any]) -> None:
    kv.validate(doc, VERSION, strict=True)  # raises ValidationError naming the field


def test_the_validator_rejects_a_misspelt_field() -> None:
    doc = by_kind("Job", "lambda-sweep-workers")
    bad = {**doc, "spec": {**doc["spec"], "paralelism": 4}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, VERSION, strict=True)


def test_the_pieces_fit_together() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for _, d in documents())
    assert ("StatefulSet", "lambda-sweep-postgres") in kinds and ("Secret", "lambda-sweep") in kinds
    workers = by_kind("Job", "lambda-sweep-workers")
    assert workers["spec"]["parallelism"] >= 2 and "completions" not in workers["spec"]  # a work queue
    secret = by_kind("Secret", "lambda-sweep")["stringData"]
    host = by_kind("Service", "lambda-sweep-postgres")["metadata"]["name"]
    assert f"@{host}:5432/" in secret["SWEEP_STORAGE"]
    dashboard = by_kind("Service", "lambda-sweep-dashboard")
    assert dashboard["spec"]["type"] == "ClusterIP"  # inside the cluster only
    for _, doc in documents():
        if doc["kind"] not in ("Job", "Deployment", "StatefulSet"):
            continue
        for c in containers(doc):
            refs = [e["secretRef"]["name"] for e in c.get("envFrom", [])]
            refs += [e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "valueFrom" in e]
            assert set(refs) <= {"lambda-sweep"}
            args = c.get("args", [])
            if args[:1] == ["sweep"]:
                cmd = main.commands[args[1]]  # a real command, and its options parse
                cmd.make_context(args[1], list(args[2:]), parent=None)
                if args[1] in ("submit",):
                    assert (ROOT / args[2]).is_file()
