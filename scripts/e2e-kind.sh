#!/usr/bin/env bash
# End to end on a throwaway kind cluster: KEDA, the chart with its control service, a demo
# workload, and the control API driven with curl as an operator would (CI's e2e-kind job runs it
# on GitHub's runners, where Docker is).
#
#   1. kind cluster; KEDA (Helm, the version k8s/platform pins); Flux's CRDs (no Flux
#      controller runs, so nothing reconciles their objects) and the CRDs of every other chart
#      k8s/platform installs with its CRDs (kube-prometheus-stack, External Secrets, the
#      policy-controller: their controllers need AWS or more than kind has). Then every object
#      each environment's cluster gets must be accepted by this real API server (server-side dry
#      run, strict field validation: an unknown field fails, CRDs included): the Flux objects of
#      k8s/clusters/<env>, each Flux Kustomization's path built by kustomize with its postBuild
#      variables substituted as Flux does (k8s/envs/<env> and its platform overlay of
#      k8s/platform), and the chart rendered with the values of the environment's HelmRelease.
#      The image built and loaded into kind.
#   2. PostgreSQL and the synthetic sky (cutout server) in their own namespace; dev's own
#      OCIRepository and HelmRelease as they are (the object a pin suspends); the chart with
#      fetch only (the object store is each pod's /tmp, so radon could not read fetch's output).
#   3. Operator and viewer ServiceAccounts bound to the chart's galpipe-operator and
#      galpipe-viewer Roles; their tokens from `kubectl create token`.
#   4. Through the control API: the viewer may read but not pause; the operator pauses (KEDA
#      scales fetch to zero), resumes, holds 2 replicas, restarts; a `helm upgrade` keeps the hold
#      and the restart; pins an image (the HelmRelease is suspended) and unpins; the audit log
#      lists every action with the operator's name.
#
# Needs docker, kind, kubectl, helm, curl, jq, yq (mikefarah's, as on GitHub's runners), envsubst.
# KEEP_CLUSTER=1 leaves the cluster up.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-galpipe-e2e}
NAMESPACE=galpipe
DEMO_NAMESPACE=galpipe-e2e
RELEASE=galpipe
IMAGE_REPOSITORY=galpipe
IMAGE_TAG=e2e
PINNED_TAG=e2e-pinned
#: The environments whose objects the API server must accept (every directory of k8s/envs).
ENVIRONMENTS=(dev prod)
#: Serves every Flux API version that k8s/ uses (OCIRepository v1beta2, HelmRelease v2 …).
FLUX_VERSION=v2.4.0
LOCAL_PORT=${E2E_CONTROL_PORT:-18080}
API="http://127.0.0.1:${LOCAL_PORT}/api/v1"
WORK=$(mktemp -d)
PORT_FORWARD_PID=""

log() { printf '\n== %s\n' "$*"; }
fail() {
  printf 'e2e-kind: FAILED: %s\n' "$*" >&2
  exit 1
}

diagnostics() {
  log "diagnostics"
  kubectl get all,scaledobjects,helmreleases -A -o wide || true
  kubectl -n "${NAMESPACE}" get events --sort-by=.lastTimestamp | tail -n 60 || true
  kubectl -n "${NAMESPACE}" logs "deploy/${RELEASE}-control" --tail=200 || true
  kubectl -n "${NAMESPACE}" logs "deploy/${RELEASE}-fetch" --tail=50 || true
  kubectl -n keda logs deploy/keda-operator --tail=50 || true
}

cleanup() {
  local status=$?
  if [ -n "${PORT_FORWARD_PID}" ]; then
    kill "${PORT_FORWARD_PID}" 2>/dev/null || true
  fi
  if [ "${status}" -ne 0 ]; then
    diagnostics
  fi
  if [ "${KEEP_CLUSTER:-0}" != "1" ]; then
    kind delete cluster --name "${CLUSTER}" || true
  fi
  rm -rf "${WORK}"
  exit "${status}"
}
trap cleanup EXIT

# Waits until the command "$@" prints EXPECTED (every 3 s, up to TIMEOUT seconds).
wait_for() {
  local what=$1 expected=$2 timeout=$3
  shift 3
  local deadline=$((SECONDS + timeout)) got=""
  while [ "${SECONDS}" -lt "${deadline}" ]; do
    got=$("$@" 2>/dev/null || true)
    if [ "${got}" = "${expected}" ]; then
      echo "${what}: ${got}"
      return 0
    fi
    sleep 3
  done
  fail "${what}: expected '${expected}', still '${got}' after ${timeout} s"
}

jsonpath() { kubectl -n "${NAMESPACE}" get "$1" -o "jsonpath=$2"; }

# Creates namespace NAME unless it exists.
ensure_namespace() {
  kubectl create namespace "$1" --dry-run=client -o yaml | kubectl apply -f - > /dev/null
}

# Prints EXPRESSION (yq) of the HelmRelease NAME of k8s/platform: what dev's platform runs.
platform_release() {
  NAME=$1 yq ea -N "select(.kind == \"HelmRelease\" and .metadata.name == strenv(NAME)) | $2" \
    k8s/platform/*.yaml
}

# Prints the URL of the HelmRepository NAME of k8s/platform.
helm_repository_url() {
  NAME=$1 yq ea -N 'select(.kind == "HelmRepository" and .metadata.name == strenv(NAME)) | .spec.url' \
    k8s/platform/*.yaml
}

# Installs the CRDs of every chart that k8s/platform installs with its CRDs (install.crds), at
# the version it pins, except release SKIP (installed whole): rendered by Helm with
# --include-crds, as helm-controller would create them.
install_platform_crds() {
  local skip=$1 releases release chart version url
  releases=$(yq ea -N 'select(.kind == "HelmRelease" and .spec.install.crds != null) | .metadata.name' \
    k8s/platform/*.yaml)
  for release in ${releases}; do
    [ "${release}" != "${skip}" ] || continue
    chart=$(platform_release "${release}" .spec.chart.spec.chart)
    version=$(platform_release "${release}" .spec.chart.spec.version)
    url=$(helm_repository_url "$(platform_release "${release}" .spec.chart.spec.sourceRef.name)")
    log "CRDs of ${chart} ${version} (k8s/platform's ${release})"
    helm template "${release}" "${chart}" --repo "${url}" --version "${version}" --include-crds \
      | yq 'select(.kind == "CustomResourceDefinition")' > "${WORK}/crds-${release}.yaml"
    grep -q '^kind: CustomResourceDefinition' "${WORK}/crds-${release}.yaml" \
      || fail "${chart} ${version} renders no CRD"
    kubectl apply --server-side -f "${WORK}/crds-${release}.yaml" > /dev/null
  done
}

# Prints the postBuild variables of the Flux Kustomization NAME in FILES...: with FORMAT pairs,
# "name=value" lines (for env); with FORMAT names, "${name}" words (envsubst's list, so that
# nothing else that looks like a variable is touched, as Flux substitutes only those).
kustomization_variables() {
  local format=$1 name=$2 entry
  shift 2
  # shellcheck disable=SC2016 # "${" is yq's text, not a shell expansion
  case ${format} in
    pairs) entry='.key + "=" + .value' ;;
    names) entry='"${" + .key + "}"' ;;
    *) fail "kustomization_variables: no format ${format}" ;;
  esac
  NAME=${name} yq ea -N "select(.kind == \"Kustomization\" and .metadata.name == strenv(NAME))
    | .spec.postBuild.substitute // {} | to_entries | .[] | ${entry}" "$@"
}

# Writes to FILE every object ENV's cluster gets, as Flux and helm-controller would make them:
# the Flux objects of k8s/clusters/ENV; the path of each of its Flux Kustomizations built by
# kustomize with that Kustomization's postBuild variables substituted; the chart rendered with
# the values of ENV's HelmRelease (k8s/envs/ENV/galpipe.yaml).
render_environment() {
  local env=$1 out=$2 cluster=k8s/clusters/$1 kustomizations name path file
  local -a variables
  : > "${out}"
  for file in "${cluster}"/*.yaml; do
    { echo '---'; cat "${file}"; } >> "${out}"
  done
  kustomizations=$(yq ea -N 'select(.kind == "Kustomization") | .metadata.name' "${cluster}"/*.yaml)
  for name in ${kustomizations}; do
    path=$(NAME=${name} yq ea -N \
      'select(.kind == "Kustomization" and .metadata.name == strenv(NAME)) | .spec.path' \
      "${cluster}"/*.yaml)
    mapfile -t variables < <(kustomization_variables pairs "${name}" "${cluster}"/*.yaml)
    echo '---' >> "${out}"
    kubectl kustomize "${path}" \
      | env "${variables[@]}" \
        envsubst "$(kustomization_variables names "${name}" "${cluster}"/*.yaml)" >> "${out}"
  done
  yq 'select(.kind == "HelmRelease" and .metadata.name == "galpipe") | .spec.values' \
    "k8s/envs/${env}/galpipe.yaml" > "${WORK}/values-${env}.yaml"
  echo '---' >> "${out}"
  helm template "${RELEASE}" charts/galpipe --namespace "${NAMESPACE}" \
    -f "${WORK}/values-${env}.yaml" >> "${out}"
}

# Fails unless the API server accepts every object of every environment: a server-side dry run
# with strict field validation, once their namespaces exist (a dry run creates none). Server-side
# apply, as Flux applies: no last-applied annotation, which the dashboards' ConfigMaps exceed.
check_every_object_is_accepted() {
  local env file namespaces namespace
  for env in "${ENVIRONMENTS[@]}"; do
    file=${WORK}/objects-${env}.yaml
    log "the API server accepts every object of ${env}"
    render_environment "${env}" "${file}"
    namespaces=$(yq ea -N 'select(.metadata.namespace != null) | .metadata.namespace' "${file}" \
      | sort -u)
    for namespace in ${namespaces}; do
      ensure_namespace "${namespace}"
    done
    kubectl apply --server-side --force-conflicts --field-manager=e2e-dry-run \
      --dry-run=server --validate=strict -f "${file}" \
      || fail "the API server rejects an object of ${env} (above)"
    echo "${env}: $(grep -c '^kind:' "${file}") objects accepted"
  done
}

# Prints true once KEDA has given fetch at least one replica.
fetch_awake() {
  local replicas
  replicas=$(jsonpath "deploy/${RELEASE}-fetch" '{.spec.replicas}')
  [ "${replicas:-0}" -ge 1 ] && echo true
}

# Prints the HelmRelease's spec.suspend (false when unset).
helm_release_suspended() {
  kubectl -n "${NAMESPACE}" get "helmrelease/${RELEASE}" -o json | jq -r '.spec.suspend // false'
}

# POST to the control API as TOKEN; prints the HTTP status, leaves the body in ${WORK}/body.
post() {
  local token=$1 path=$2 body=$3
  curl -sS -o "${WORK}/body" -w '%{http_code}' -X POST "${API}${path}" \
    -H "Authorization: Bearer ${token}" -H 'Content-Type: application/json' -d "${body}"
}

# An action the operator must be allowed: HTTP 200 and result "ok".
act() {
  local path=$1 body=$2 status
  status=$(post "${OPERATOR_TOKEN}" "${path}" "${body}")
  [ "${status}" = "200" ] || fail "POST ${path}: HTTP ${status}: $(cat "${WORK}/body")"
  jq -e '.result == "ok"' "${WORK}/body" > /dev/null \
    || fail "POST ${path}: not ok: $(cat "${WORK}/body")"
  echo "POST ${path}: ok"
}

# -- 1. cluster, KEDA, the platform's CRDs; every object accepted; the image ---------------------

log "kind cluster ${CLUSTER}"
kind create cluster --name "${CLUSTER}" --wait 180s

KEDA_VERSION=$(platform_release keda .spec.chart.spec.version)
log "KEDA ${KEDA_VERSION} (k8s/platform's)"
helm repo add kedacore "$(helm_repository_url kedacore)" --force-update
helm install keda kedacore/keda --version "${KEDA_VERSION}" --namespace keda \
  --create-namespace --wait --timeout 5m

log "Flux CRDs ${FLUX_VERSION}"
curl -fsSL "https://github.com/fluxcd/flux2/releases/download/${FLUX_VERSION}/install.yaml" \
  | yq 'select(.kind == "CustomResourceDefinition")' > "${WORK}/flux-crds.yaml"
kubectl apply --server-side -f "${WORK}/flux-crds.yaml" > /dev/null
install_platform_crds keda
kubectl wait --for=condition=Established --timeout=120s crd --all

check_every_object_is_accepted

log "image ${IMAGE_REPOSITORY}:${IMAGE_TAG}"
docker build -f services/Dockerfile -t "${IMAGE_REPOSITORY}:${IMAGE_TAG}" \
  --build-arg VERSION=e2e --build-arg REVISION=e2e .
# The image a pin rolls to: the same bits under another tag.
docker tag "${IMAGE_REPOSITORY}:${IMAGE_TAG}" "${IMAGE_REPOSITORY}:${PINNED_TAG}"
kind load docker-image --name "${CLUSTER}" \
  "${IMAGE_REPOSITORY}:${IMAGE_TAG}" "${IMAGE_REPOSITORY}:${PINNED_TAG}"

# -- 2. database, cutout server, the chart ------------------------------------------------------

log "PostgreSQL and the synthetic sky in ${DEMO_NAMESPACE}"
kubectl create namespace "${DEMO_NAMESPACE}"
kubectl apply -n "${DEMO_NAMESPACE}" -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: postgres
spec:
  replicas: 1
  selector:
    matchLabels: {app: postgres}
  template:
    metadata:
      labels: {app: postgres}
    spec:
      containers:
        - name: postgres
          image: postgres:16-alpine
          env:
            - {name: POSTGRES_USER, value: galpipe}
            - {name: POSTGRES_PASSWORD, value: galpipe}
            - {name: POSTGRES_DB, value: galpipe}
          ports:
            - containerPort: 5432
          readinessProbe:
            exec:
              command: [pg_isready, -U, galpipe, -d, galpipe]
            periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: postgres
spec:
  selector: {app: postgres}
  ports:
    - port: 5432
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sky
spec:
  replicas: 1
  selector:
    matchLabels: {app: sky}
  template:
    metadata:
      labels: {app: sky}
    spec:
      initContainers:
        - name: catalog
          image: ${IMAGE_REPOSITORY}:${IMAGE_TAG}
          imagePullPolicy: Never
          args: [sky, catalog, --n, "300", --seed, "7", --out, /sky/catalog.ecsv]
          volumeMounts:
            - {name: sky, mountPath: /sky}
      containers:
        - name: sky
          image: ${IMAGE_REPOSITORY}:${IMAGE_TAG}
          imagePullPolicy: Never
          args: [sky, serve, --host, 0.0.0.0, --port, "8764", --catalog, /sky/catalog.ecsv]
          ports:
            - containerPort: 8764
          readinessProbe:
            httpGet: {path: /healthz, port: 8764}
            periodSeconds: 2
          volumeMounts:
            - {name: sky, mountPath: /sky}
            - {name: tmp, mountPath: /tmp}
      volumes:
        - {name: sky, emptyDir: {}}
        - {name: tmp, emptyDir: {}}
---
apiVersion: v1
kind: Service
metadata:
  name: sky
spec:
  selector: {app: sky}
  ports:
    - port: 8764
EOF
kubectl -n "${DEMO_NAMESPACE}" rollout status deploy/postgres --timeout=180s
kubectl -n "${DEMO_NAMESPACE}" rollout status deploy/sky --timeout=300s

log "namespace ${NAMESPACE} (restricted Pod Security), database Secret, dev's HelmRelease"
ensure_namespace "${NAMESPACE}"
kubectl label namespace "${NAMESPACE}" --overwrite pod-security.kubernetes.io/enforce=restricted
kubectl -n "${NAMESPACE}" create secret generic galpipe-database \
  --from-literal=url="postgresql://galpipe:galpipe@postgres.${DEMO_NAMESPACE}.svc.cluster.local:5432/galpipe"
# dev's own chart source and HelmRelease (the chart from its OCIRepository), as they are: no Flux
# controller reconciles them; the control service suspends and resumes the HelmRelease.
kubectl apply --server-side -f k8s/envs/dev/chart-source.yaml -f k8s/envs/dev/galpipe.yaml

cat > "${WORK}/values.yaml" <<EOF
image:
  repository: ${IMAGE_REPOSITORY}
  tag: ${IMAGE_TAG}
  pullPolicy: Never
objectStore:
  url: file:///tmp/objects
config:
  GALPIPE_LOG_FORMAT: json
  # A slow fetch, so that it is still working when the operator pauses it.
  GALPIPE_FETCH_RATE_LIMIT: "1"
  GALPIPE_FETCH_RATE_BURST: "1"
  GALPIPE_CUTOUT_BASE_URL: http://sky.${DEMO_NAMESPACE}.svc.cluster.local:8764
pipelines:
  fetch:
    autoscaling:
      targetQueryValue: 100
      pollingInterval: 5
      cooldownPeriod: 20
  radon:
    enabled: false
control:
  replicas: 1
pod:
  topologySpread:
    enabled: false
networkPolicy:
  # kind's pod and service networks: the database and the cutout server run in pods.
  database:
    cidrs: [10.244.0.0/16, 10.96.0.0/12]
  cutoutService:
    cidrs: [10.244.0.0/16, 10.96.0.0/12]
    port: 8764
serviceMonitor:
  enabled: false
prometheusRule:
  enabled: false
grafanaDashboards:
  enabled: false
EOF

log "helm install ${RELEASE}"
helm install "${RELEASE}" charts/galpipe --namespace "${NAMESPACE}" -f "${WORK}/values.yaml" \
  --wait --timeout 10m
kubectl -n "${NAMESPACE}" rollout status "deploy/${RELEASE}-control" --timeout=180s

# -- 3. people --------------------------------------------------------------------------------

log "operator and viewer ServiceAccounts"
for who in operator viewer; do
  kubectl -n "${NAMESPACE}" create serviceaccount "e2e-${who}"
  kubectl -n "${NAMESPACE}" create rolebinding "e2e-${who}" --role="${RELEASE}-${who}" \
    --serviceaccount="${NAMESPACE}:e2e-${who}"
done
OPERATOR_TOKEN=$(kubectl -n "${NAMESPACE}" create token e2e-operator --duration=1h)
VIEWER_TOKEN=$(kubectl -n "${NAMESPACE}" create token e2e-viewer --duration=1h)
kubectl auth can-i pause pipelines.galpipe.io -n "${NAMESPACE}" \
  --as="system:serviceaccount:${NAMESPACE}:e2e-operator" | grep -qx yes \
  || fail "the operator Role does not grant pause"

kubectl -n "${NAMESPACE}" port-forward "svc/${RELEASE}-control" "${LOCAL_PORT}:http" \
  > "${WORK}/port-forward.log" 2>&1 &
PORT_FORWARD_PID=$!
wait_for "control API answers" 401 60 \
  curl -s -o /dev/null -w '%{http_code}' "${API}/overview"

# -- 4. the control API -------------------------------------------------------------------------

log "demo work: 300 galaxies queued for fetch"
kubectl -n "${NAMESPACE}" exec "deploy/${RELEASE}-monitor" -- \
  galpipe sky catalog --n 300 --seed 7 --out /tmp/catalog.ecsv
kubectl -n "${NAMESPACE}" exec "deploy/${RELEASE}-monitor" -- \
  galpipe ingest /tmp/catalog.ecsv --no-progress
wait_for "KEDA woke fetch" true 180 fetch_awake

log "viewer: reads, may not pause"
status=$(curl -sS -o "${WORK}/body" -w '%{http_code}' "${API}/overview" \
  -H "Authorization: Bearer ${VIEWER_TOKEN}")
[ "${status}" = "200" ] || fail "viewer overview: HTTP ${status}"
jq -e 'tostring | contains("fetch")' "${WORK}/body" > /dev/null || fail "overview lacks fetch"
status=$(post "${VIEWER_TOKEN}" /pipelines/fetch/pause '{"reason": "e2e: a viewer tries"}')
[ "${status}" = "403" ] || fail "viewer pause: HTTP ${status}, expected 403"
status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "${API}/pipelines/fetch/pause" \
  -H 'Authorization: Bearer not-a-token' -H 'Content-Type: application/json' \
  -d '{"reason": "e2e"}')
[ "${status}" = "401" ] || fail "a rejected token: HTTP ${status}, expected 401"

log "pause: KEDA scales fetch to zero"
act /pipelines/fetch/pause '{"reason": "e2e: pause scales to zero"}'
wait_for "fetch replicas" 0 240 jsonpath "deploy/${RELEASE}-fetch" '{.spec.replicas}'
act /pipelines/fetch/resume '{"reason": "e2e: resume"}'
wait_for "KEDA woke fetch again" true 180 fetch_awake

log "hold 2 replicas"
act /pipelines/fetch/hold '{"replicas": 2, "reason": "e2e: hold at two"}'
wait_for "paused-replicas annotation" 2 60 \
  jsonpath "scaledobject/${RELEASE}-fetch" '{.metadata.annotations.autoscaling\.keda\.sh/paused-replicas}'
wait_for "fetch replicas" 2 120 jsonpath "deploy/${RELEASE}-fetch" '{.spec.replicas}'

log "restart"
act /pipelines/fetch/restart '{"reason": "e2e: rollout restart"}'
restarted=$(jsonpath "deploy/${RELEASE}-fetch" \
  '{.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}')
[ -n "${restarted}" ] || fail "restart set no restartedAt annotation"
kubectl -n "${NAMESPACE}" rollout status "deploy/${RELEASE}-fetch" --timeout=300s

log "helm upgrade: the hold and the restart survive a re-render"
helm upgrade "${RELEASE}" charts/galpipe --namespace "${NAMESPACE}" -f "${WORK}/values.yaml" \
  --set-string 'pipelines.fetch.podAnnotations.e2e/upgraded=yes' --wait --timeout 10m
wait_for "paused-replicas after upgrade" 2 30 \
  jsonpath "scaledobject/${RELEASE}-fetch" '{.metadata.annotations.autoscaling\.keda\.sh/paused-replicas}'
wait_for "restartedAt after upgrade" "${restarted}" 30 \
  jsonpath "deploy/${RELEASE}-fetch" '{.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}'

log "pin an image (GitOps suspended), then unpin"
act /pipelines/fetch/pin "{\"image\": \"${IMAGE_REPOSITORY}:${PINNED_TAG}\", \"reason\": \"e2e: roll back\"}"
wait_for "pinned image" "${IMAGE_REPOSITORY}:${PINNED_TAG}" 60 \
  jsonpath "deploy/${RELEASE}-fetch" '{.spec.template.spec.containers[0].image}'
wait_for "HelmRelease suspended" true 30 helm_release_suspended
kubectl -n "${NAMESPACE}" rollout status "deploy/${RELEASE}-fetch" --timeout=300s
act /pipelines/fetch/unpin '{"reason": "e2e: back to Git"}'
wait_for "image back to Git's" "${IMAGE_REPOSITORY}:${IMAGE_TAG}" 60 \
  jsonpath "deploy/${RELEASE}-fetch" '{.spec.template.spec.containers[0].image}'
wait_for "HelmRelease resumed" false 30 helm_release_suspended
act /pipelines/fetch/release-hold '{"reason": "e2e: back to KEDA"}'
wait_for "paused-replicas released" "" 60 \
  jsonpath "scaledobject/${RELEASE}-fetch" '{.metadata.annotations.autoscaling\.keda\.sh/paused-replicas}'

log "audit log"
status=$(curl -sS -o "${WORK}/audit.json" -w '%{http_code}' "${API}/audit?pipeline=fetch&limit=50" \
  -H "Authorization: Bearer ${OPERATOR_TOKEN}")
[ "${status}" = "200" ] || fail "audit: HTTP ${status}"
operator="system:serviceaccount:${NAMESPACE}:e2e-operator"
for action in pause resume hold restart pin unpin release_hold; do
  jq -e --arg action "${action}" --arg user "${operator}" \
    'any(.[]; .action == $action and .user == $user and .result == "ok" and (.reason | length > 0))' \
    "${WORK}/audit.json" > /dev/null || fail "audit log has no ok ${action} by ${operator}"
  echo "audited: ${action}"
done
kubectl -n "${NAMESPACE}" get events.events.k8s.io -o json \
  | jq -e --arg name "${RELEASE}-fetch" \
    'any(.items[]; .regarding.kind == "Deployment" and .regarding.name == $name
      and .reportingInstance == ($name | sub("-fetch$"; "-control")))' > /dev/null \
  || fail "no Event from the control service regarding deploy/${RELEASE}-fetch"

log "e2e-kind: every check passed"
