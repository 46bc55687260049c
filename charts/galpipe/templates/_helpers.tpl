{{/*
Names, labels and the pod pieces every component shares (pipelines, monitor, migration).
*/}}

{{- define "galpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* `<release>-<chart>`, or the release name alone when it already contains the chart name.
Truncated to 45 so that `-<component>` suffixes (up to 17 characters) stay within 63. */}}
{{- define "galpipe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "galpipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. Call with (dict "root" $ "component" "fetch"). */}}
{{- define "galpipe.labels" -}}
helm.sh/chart: {{ include "galpipe.chart" .root }}
{{ include "galpipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: galpipe
{{- end }}

{{/* Labels that select one component's pods. Call with (dict "root" $ "component" "fetch"). */}}
{{- define "galpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "galpipe.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Name of one component's objects: `<fullname>-<component>`. */}}
{{- define "galpipe.componentName" -}}
{{- printf "%s-%s" (include "galpipe.fullname" .root) .component }}
{{- end }}

{{- define "galpipe.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* A pipeline's image: with gpu.enabled, the GPU variant, whose tag is the image's tag and
gpu.imageTagSuffix (release.yml pushes `<tag>-gpu`). A digest names one image, the CPU one, so
it cannot be combined with the suffix. Call with
(dict "root" $ "component" NAME "values" PIPELINE-VALUES). */}}
{{- define "galpipe.pipelineImage" -}}
{{- $root := .root -}}
{{- $gpu := .values.gpu | default dict -}}
{{- if and $gpu.enabled $gpu.imageTagSuffix -}}
{{- if $root.Values.image.digest -}}
{{- fail (printf "pipelines.%s.gpu.enabled with image.digest: the digest pins the CPU image; set pipelines.%s.gpu.imageTagSuffix to \"\" and image.digest to the GPU image's digest, or pin by tag" .component .component) -}}
{{- end -}}
{{- printf "%s:%s%s" $root.Values.image.repository (default $root.Chart.AppVersion $root.Values.image.tag) $gpu.imageTagSuffix -}}
{{- else -}}
{{- include "galpipe.image" $root -}}
{{- end -}}
{{- end }}

{{/*
The KEDA trigger's query: the code's READY_DEPTH_CAPPED_SQL (files/ready-depth.sql, kept equal to it
by tests/deploy/test_chart_contract.py) with the pipeline's name as a SQL literal and its cap. KEDA's
PostgreSQL trigger takes no bind parameters; the schema restricts pipeline names to
[a-z][a-z0-9]*, so quoting cannot be escaped.
*/}}
{{- define "galpipe.readyDepthQuery" -}}
{{- $sql := .root.Files.Get "files/ready-depth.sql" }}
{{- if not $sql }}
{{- fail "files/ready-depth.sql is missing from the chart: it is the autoscaler's depth query" }}
{{- end }}
{{- /* The count stops at maxReplicaCount x targetQueryValue + 1 (db/queue.py ready_depth_cap):
past it KEDA's answer no longer changes, and "+1" shows the pipeline is at its cap. */}}
{{- $a := (get .root.Values.pipelines .pipeline).autoscaling }}
{{- $cap := add1 (int (floor (mulf $a.maxReplicaCount $a.targetQueryValue))) }}
{{- $sql | replace "%(pipeline)s" (squote .pipeline) | replace "%(cap)s" (toString $cap) | trim }}
{{- end }}

{{/* Pod security context: non-root, RuntimeDefault seccomp (restricted Pod Security Standard). */}}
{{- define "galpipe.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.pod.runAsUser }}
runAsGroup: {{ .Values.pod.runAsGroup }}
fsGroup: {{ .Values.pod.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "galpipe.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.pod.runAsUser }}
runAsGroup: {{ .Values.pod.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Environment of a galpipe container: the settings the chart owns, then `config` overlaid by the
component's own `config`. Call with (dict "root" $ "config" $component.config "objectStore" bool
"credentials" "app"|"migrator"): the database role whose Secret gives the URL (without password)
and, mounted by galpipe.databaseVolumes, the password file read at every new connection.
*/}}
{{- define "galpipe.env" -}}
{{- $root := .root -}}
{{- $db := $root.Values.database -}}
- name: GALPIPE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ (get $db (.credentials | default "app")).existingSecret }}
      key: {{ $db.urlKey }}
- name: GALPIPE_DATABASE_PASSWORD_FILE
  value: {{ printf "%s/password" (include "galpipe.databaseSecretDir" .) | quote }}
- name: GALPIPE_METRICS_PORT
  value: {{ $root.Values.metricsPort | quote }}
- name: GALPIPE_WORKER_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- if .objectStore }}
- name: GALPIPE_OBJECT_STORE
  value: {{ $root.Values.objectStore.url | quote }}
{{- with $root.Values.objectStore.endpointUrl }}
- name: GALPIPE_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- range $key, $value := merge (deepCopy (.config | default dict)) $root.Values.config }}
- name: {{ $key }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Where a pod mounts its database role's password. */}}
{{- define "galpipe.databaseSecretDir" -}}
/var/run/secrets/galpipe/database
{{- end }}

{{/*
The database role's password as a file. Not a subPath mount: the kubelet rewrites a whole Secret
volume in place when the Secret changes (External Secrets storing a rotated password), and
galpipe reads the file again for every new connection, so no pod restarts. Call with
(dict "root" $ "credentials" "app"|"migrator").
*/}}
{{- define "galpipe.databaseVolumes" -}}
- name: database-password
  secret:
    secretName: {{ (get .root.Values.database (.credentials | default "app")).existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .root.Values.database.passwordKey }}
        path: password
{{- end }}

{{- define "galpipe.databaseMounts" -}}
- name: database-password
  mountPath: {{ include "galpipe.databaseSecretDir" . }}
  readOnly: true
{{- end }}

{{/* The one writable path of the read-only root filesystem: /tmp (the image's HOME, TMPDIR and
XDG_CACHE_HOME). The image's baked Radon operator stays read-only in /opt/galpipe/radon-cache. */}}
{{- define "galpipe.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .sizeLimit }}
{{- end }}

{{- define "galpipe.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Probes on the metrics server's /healthz (liveness, start-up) and /readyz (readiness). */}}
{{- define "galpipe.probes" -}}
{{- $p := .Values.pod.probes -}}
startupProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end }}

{{/* Scheduling of one component's pods: `pod`'s nodeSelector, tolerations, affinity and
priorityClassName, each replaced by the component's own `scheduling` entry of that name when it
gives one (a pipeline's `scheduling.nodeSelector: {}` clears the global selector); a pipeline
with `gpu.enabled` adds the GPU nodes' selector and tolerations. Call with
(dict "root" $ "component" "fetch") or, for a component with a `scheduling` block, with
"values" its values too. */}}
{{- define "galpipe.scheduling" -}}
{{- $v := .root.Values.pod }}
{{- $own := (get (.values | default dict) "scheduling") | default dict }}
{{- $s := dict }}
{{- range $key := list "nodeSelector" "tolerations" "affinity" "priorityClassName" }}
{{- $_ := set $s $key (hasKey $own $key | ternary (get $own $key) (get $v $key)) }}
{{- end }}
{{- /* A GPU pipeline also selects the GPU nodes (its labels win over the same keys) and
tolerates their taint, whatever else it selects and tolerates. */}}
{{- $gpu := (get (.values | default dict) "gpu") | default dict }}
{{- if $gpu.enabled }}
{{- $_ := set $s "nodeSelector" (merge (deepCopy $gpu.nodeSelector) ($s.nodeSelector | default dict)) }}
{{- $_ := set $s "tolerations" (concat ($s.tolerations | default list) $gpu.tolerations) }}
{{- end }}
{{- with $s.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $s.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - topologyKey: {{ . }}
    maxSkew: {{ $v.topologySpread.maxSkew }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "galpipe.selectorLabels" $ | nindent 8 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* A component's `resources`, with limits["nvidia.com/gpu"] = gpu.count when `gpu.enabled`
(an extended resource's request defaults to its limit). Call with the component's values. */}}
{{- define "galpipe.resources" -}}
{{- $r := deepCopy .resources }}
{{- $gpu := (get . "gpu") | default dict }}
{{- if $gpu.enabled }}
{{- $_ := set $r.limits "nvidia.com/gpu" $gpu.count }}
{{- end }}
{{- toYaml $r }}
{{- end }}

{{/* The morphology workers' settings that the chart owns: the model they load (required: no
release runs an unnamed model) and the device, CUDA exactly when the pods get a GPU. Call with
pipelines.morphology. */}}
{{- define "galpipe.morphologyEnv" -}}
{{- $version := required "pipelines.morphology.modelVersion is empty: with pipelines.morphology.enabled=true set it to the version of the registered model the workers load (the SHA-256 of its ONNX bytes, 64 hex digits)" .modelVersion -}}
- name: GALPIPE_MORPHOLOGY_MODEL
  value: {{ $version | quote }}
- name: GALPIPE_MORPHOLOGY_DEVICE
  value: {{ .gpu.enabled | ternary "cuda" "cpu" | quote }}
{{- end }}

{{/* The radon workers' setting that the chart owns: the device of the science core's
transform and fits, CUDA exactly when the pods get a GPU. Call with pipelines.radon. */}}
{{- define "galpipe.radonEnv" -}}
- name: GALPIPE_RADON_DEVICE
  value: {{ (dig "gpu" "enabled" false .) | ternary "cuda" "cpu" | quote }}
{{- end }}

{{/* The photo-z workers' setting that the chart owns: the model they load (required, as
morphology's). No device: the kNN runs on the CPU. Call with pipelines.photoz. */}}
{{- define "galpipe.photozEnv" -}}
{{- $version := required "pipelines.photoz.modelVersion is empty: with pipelines.photoz.enabled=true set it to the version of the registered model the workers load (the SHA-256 of its bytes, 64 hex digits, as `galpipe photoz models` lists it)" .modelVersion -}}
- name: GALPIPE_PHOTOZ_MODEL
  value: {{ $version | quote }}
{{- end }}

{{/* The pipelines whose workers' successes are queued by a route from fetch that the migrate
Job adds (`galpipe routes add fetch <p>`), in the order it adds them: those of them enabled. */}}
{{- define "galpipe.routedPipelines" -}}
{{- $routed := list }}
{{- range $name := list "morphology" "photoz" }}
{{- if dig $name "enabled" false $.Values.pipelines }}{{ $routed = append $routed $name }}{{ end }}
{{- end }}
{{- toJson $routed }}
{{- end }}

{{/* One step of the migrate Job: a container running `galpipe ARGS...` as the migrator role.
Call with (dict "root" $ "component" "migrate" "name" NAME "args" (list ARG...)). */}}
{{- define "galpipe.migrateStep" -}}
{{- $root := .root -}}
- name: {{ .name }}
  image: {{ include "galpipe.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: {{ prepend .args "galpipe" | toJson }}
  env:
    {{- include "galpipe.env" (dict "root" $root "config" dict "objectStore" false "credentials" "migrator") | nindent 4 }}
  resources:
    {{- toYaml $root.Values.migrations.resources | nindent 4 }}
  securityContext:
    {{- include "galpipe.containerSecurityContext" $root | nindent 4 }}
  volumeMounts:
    {{- include "galpipe.scratchMounts" . | nindent 4 }}
    {{- include "galpipe.databaseMounts" . | nindent 4 }}
{{- end }}

{{/* The pod spec of a long-running galpipe process (a pipeline or the monitor): it runs
`galpipe` with the component's `command` values, else with SUBCOMMAND.
Call with (dict "root" $ "component" NAME "values" COMPONENT_VALUES "command" SUBCOMMAND
"objectStore" bool "scratchSizeLimit" SIZE). */}}
{{- define "galpipe.processPodSpec" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "galpipe.componentName" . }}
# Workers never call the Kubernetes API; IRSA's web-identity token is a volume of its own.
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ .values.terminationGracePeriodSeconds }}
securityContext:
  {{- include "galpipe.podSecurityContext" $root | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (include "galpipe.scheduling" . | trim) }}
{{ . }}
{{- end }}
containers:
  - name: {{ .component }}
    image: {{ include "galpipe.pipelineImage" (dict "root" $root "component" .component "values" .values) }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: {{ prepend (.values.command | default (list .command)) "galpipe" | toJson }}
    ports:
      - name: metrics
        containerPort: {{ $root.Values.metricsPort }}
        protocol: TCP
    env:
      {{- include "galpipe.env" (dict "root" $root "config" .values.config "objectStore" .objectStore) | nindent 6 }}
      {{- if eq .component "morphology" }}
      {{- include "galpipe.morphologyEnv" .values | nindent 6 }}
      {{- else if eq .component "photoz" }}
      {{- include "galpipe.photozEnv" .values | nindent 6 }}
      {{- else if eq .component "radon" }}
      {{- include "galpipe.radonEnv" .values | nindent 6 }}
      {{- end }}
    {{- include "galpipe.probes" $root | nindent 4 }}
    resources:
      {{- include "galpipe.resources" .values | nindent 6 }}
    securityContext:
      {{- include "galpipe.containerSecurityContext" $root | nindent 6 }}
    volumeMounts:
      {{- include "galpipe.scratchMounts" . | nindent 6 }}
      {{- include "galpipe.databaseMounts" . | nindent 6 }}
volumes:
  {{- include "galpipe.scratchVolumes" (dict "sizeLimit" .scratchSizeLimit) | nindent 2 }}
  {{- include "galpipe.databaseVolumes" (dict "root" $root "credentials" "app") | nindent 2 }}
{{- end }}

{{/* Name of the Secret holding the control service's session-signing key. */}}
{{- define "galpipe.controlSessionSecret" -}}
{{- .Values.control.sessionKey.existingSecret | default (include "galpipe.componentName" (dict "root" . "component" "control-session")) }}
{{- end }}

{{/*
`data` of the generated session-key Secret: the live Secret's key when there is one (`existing`,
what `lookup` found), so that an upgrade never signs out every operator; else a new random key.
Call with (dict "root" $ "existing" (lookup "v1" "Secret" NAMESPACE NAME)).
*/}}
{{- define "galpipe.controlSessionSecretData" -}}
{{- $key := .root.Values.control.sessionKey.key }}
{{- $old := "" }}
{{- if .existing }}{{ $old = get (.existing.data | default dict) $key }}{{ end }}
{{ $key }}: {{ $old | default (randAlphaNum 64 | b64enc) | quote }}
{{- end }}
