#!/usr/bin/env python3
"""Offline check of the kustomize tree (envoyfilter-manifests/ by default).

Every kustomization under ROOT (any directory with a kustomization.yaml whose
kind is Kustomization) is rendered with `kubectl kustomize`, and each document
of the output is checked:

- Kubernetes kinds against their OpenAPI schemas (PyPI kubernetes-validate,
  strict: an unknown field is an error), for the oldest and newest Kubernetes
  versions listed below;
- Istio kinds (*.istio.io) against the typed models generated from Istio's
  CRDs (PyPI cloudcoil-models-istio): validated, then dumped again and
  compared with the input, because the models drop unknown fields silently;
- EnvoyFilters stay under ENVOYFILTER_MAX_BYTES as the API server stores them
  (compact JSON): the policy travels over ECDS, not inline;
- a configMapGenerator that takes files from a directory takes all of its
  YAML files (kustomize accepts no directories, so a new policy file is
  easily left out).

Components (kind: Component) cannot render alone: they are checked through
the kustomizations that use them, and one used by none is reported.

Every problem is one line: `KUSTOMIZATION: Kind namespace/name (FILE):
field.path: message`. Exit 0 when all is well, 1 on problems, 2 when a tool
is missing.

Usage: check-manifests.py [ROOT...]
"""

import json
import os
import shutil
import subprocess
import sys

# Istio 1.24 (the oldest release the manifests target) supports Kubernetes
# 1.28 and up; the newest schemas kubernetes-validate ships come second.
KUBERNETES_VERSIONS = ["1.28.0", "latest"]
ENVOYFILTER_MAX_BYTES = 10_000
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def fail_setup(message):
    print(f"check-manifests: {message}", file=sys.stderr)
    sys.exit(2)


try:
    import yaml
    import pydantic
    from kubernetes_validate import utils as kv
except ImportError as e:
    fail_setup(f"{e.name} is missing: run `make setup` (installs kubernetes-validate and cloudcoil-models-istio into .venv)")


def kustomize_command():
    """`kubectl kustomize` ($KUBECTL, else kubectl on PATH), else `kustomize build`."""
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    fail_setup("kubectl not found: install kubectl (it carries Kustomize 5) or kustomize, or set KUBECTL")


def kustomization_file(directory):
    for name in KUSTOMIZATION_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def find_kustomizations(root):
    """(directory, parsed kustomization) for every kustomization under root, sorted."""
    found = []
    for directory, subdirs, _ in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        path = kustomization_file(directory)
        if path:
            with open(path) as f:
                found.append((directory, yaml.safe_load(f) or {}))
    return found


def dotted(path):
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def differences(given, dumped, path=()):
    """Where the model's dump differs from the input: (path, message) pairs."""
    if isinstance(given, dict) and isinstance(dumped, dict):
        for key, value in given.items():
            if key not in dumped:
                yield path + (key,), "unknown field (not in the schema; the model dropped it)"
            else:
                yield from differences(value, dumped[key], path + (key,))
        for key in dumped:
            if key not in given:
                yield path + (key,), f"added by the model as {json.dumps(dumped[key])}"
    elif isinstance(given, list) and isinstance(dumped, list) and len(given) == len(dumped):
        for i, (a, b) in enumerate(zip(given, dumped)):
            yield from differences(a, b, path + (i,))
    elif given != dumped or type(given) is not type(dumped):
        yield path, f"value {json.dumps(given)} read as {json.dumps(dumped)}"


def istio_model(doc):
    """The cloudcoil model class for an Istio document, or None."""
    group, _, version = doc.get("apiVersion", "").partition("/")
    if not group.endswith(".istio.io") or not version:
        return None
    module_name = f"cloudcoil.models.istio.{group[: -len('.istio.io')]}.{version}"
    try:
        module = __import__(module_name, fromlist=["_"])
    except ImportError:
        return None
    return getattr(module, doc.get("kind", ""), None)


def check_istio(doc, model):
    try:
        parsed = model.model_validate(doc)
    except pydantic.ValidationError as e:
        for error in e.errors():
            yield dotted(error["loc"]), error["msg"]
        return
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    for path, message in differences(doc, dumped):
        yield dotted(path), message


def check_kubernetes(doc):
    for version in KUBERNETES_VERSIONS:
        version = kv.latest_version() if version == "latest" else version
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            path = tuple(e.path)
            if e.validator == "additionalProperties" and isinstance(e.instance, dict):
                known = set((e.schema or {}).get("properties") or {})
                for extra in sorted(k for k in e.instance if k not in known):
                    yield dotted(path + (extra,)), f"unknown field (Kubernetes {e.version} schema)"
            else:
                yield dotted(path), f"{e.message} (Kubernetes {e.version} schema)"
            return
        except kv.SchemaNotFoundError:
            yield "kind", f"no schema for {doc.get('kind')} {doc.get('apiVersion')} (Kubernetes {version}): cannot check it"
            return


def check_document(doc):
    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        yield "(document)", "not a Kubernetes object (no kind or apiVersion)"
        return
    if doc["apiVersion"].split("/")[0].endswith(".istio.io"):
        model = istio_model(doc)
        if model is None:
            yield "kind", f"no Istio model for {doc['kind']} {doc['apiVersion']}: cannot check it"
            return
        yield from check_istio(doc, model)
        if doc["kind"] == "EnvoyFilter":
            size = len(json.dumps(doc, separators=(",", ":")).encode())
            if size >= ENVOYFILTER_MAX_BYTES:
                yield "(document)", f"EnvoyFilter is {size} bytes as JSON, over the {ENVOYFILTER_MAX_BYTES}-byte limit: keep the policy in xds-ext, not inline"
    else:
        yield from check_kubernetes(doc)


class Sources:
    """Finds the file under root that defines a rendered document (by kind and
    name; kustomize may have added a namespace or labels)."""

    def __init__(self, root):
        self.where = {}
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(files):
                if name.endswith((".yaml", ".yml")) and name not in KUSTOMIZATION_FILES:
                    path = os.path.join(directory, name)
                    try:
                        with open(path) as f:
                            docs = list(yaml.safe_load_all(f))
                    except (OSError, yaml.YAMLError):
                        continue
                    for doc in docs:
                        if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
                            self.where.setdefault((doc.get("kind"), doc["metadata"].get("name")), path)

    def of(self, doc):
        return self.where.get((doc.get("kind"), (doc.get("metadata") or {}).get("name")))


def generator_problems(directory, kustomization):
    """configMapGenerator entries that take some but not all YAML files of a directory."""
    for generator in kustomization.get("configMapGenerator") or []:
        listed = set()
        for entry in generator.get("files") or []:
            listed.add(os.path.normpath(entry.split("=", 1)[-1]))
        for folder in sorted({os.path.dirname(p) for p in listed if os.path.dirname(p)}):
            present = os.listdir(os.path.join(directory, folder)) if os.path.isdir(os.path.join(directory, folder)) else []
            for name in sorted(present):
                relative = os.path.join(folder, name)
                if name.endswith((".yaml", ".yml", ".json")) and not name.startswith(".") and relative not in listed:
                    yield f"configMapGenerator {generator.get('name')}: {relative} is in {folder}/ but not under files:"


def describe(doc, sources, parent):
    """`Kind namespace/name (source file)` of a rendered document."""
    if not isinstance(doc, dict):
        return "document"
    meta = doc.get("metadata") or {}
    name = f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))
    source = sources.of(doc)
    origin = f" ({os.path.relpath(source, parent)})" if source else ""
    return f"{doc.get('kind')} {name}{origin}"


def check_root(root, kustomize):
    problems = 0
    checked = 0

    def report(where, message):
        nonlocal problems
        problems += 1
        print(f"{where}: {message}")

    kustomizations = find_kustomizations(root)
    if not kustomizations:
        report(shown_root, "no kustomization found")
        return problems, checked
    sources = Sources(root)
    # Paths are shown from ROOT's parent: envoyfilter-manifests/overlays/all.
    parent = os.path.dirname(os.path.abspath(root))
    components = {os.path.realpath(d) for d, k in kustomizations if k.get("kind") == "Component"}
    used = set()
    for directory, kustomization in kustomizations:
        shown = os.path.relpath(directory, parent)
        for entry in kustomization.get("components") or []:
            used.add(os.path.realpath(os.path.join(directory, entry)))
        for message in generator_problems(directory, kustomization):
            report(shown, message)
        if kustomization.get("kind") == "Component":
            continue
        render = subprocess.run(kustomize + [directory], capture_output=True, text=True)
        if render.returncode != 0:
            reason = " ".join(render.stderr.split()) or f"exit {render.returncode}"
            report(shown, f"does not render: {reason}")
            continue
        try:
            docs = [d for d in yaml.safe_load_all(render.stdout) if d is not None]
        except yaml.YAMLError as e:
            report(shown, f"rendered output is not YAML: {e}")
            continue
        checked += 1
        for doc in docs:
            for field, message in check_document(doc):
                report(shown, f"{describe(doc, sources, parent)}: {field}: {message}")
    for component in sorted(components - used):
        print(f"warning: {os.path.relpath(component)}: component used by no kustomization: not checked")
    return problems, checked


def istio_models_version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cloudcoil.models.istio")
    except PackageNotFoundError:
        return "?"


def main(argv):
    roots = argv or [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "envoyfilter-manifests")]
    kustomize = kustomize_command()
    total_problems = 0
    total_checked = 0
    for root in roots:
        if not os.path.isdir(root):
            fail_setup(f"{root}: no such directory")
        problems, checked = check_root(os.path.normpath(root), kustomize)
        total_problems += problems
        total_checked += checked
    versions = ", ".join(kv.latest_version() if v == "latest" else v for v in KUBERNETES_VERSIONS)
    print(
        f"check-manifests: {total_checked} kustomization(s) rendered, {total_problems} problem(s) "
        f"(schemas: Kubernetes {versions} from kubernetes-validate {kv.__version__}; Istio models {istio_models_version()})"
    )
    return 1 if total_problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
