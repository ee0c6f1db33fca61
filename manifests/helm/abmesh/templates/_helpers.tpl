{{/* Names: the release's prefix, used by every object of the chart. */}}
{{- define "abmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "abmesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "abmesh.controllerName" -}}
{{- printf "%s-controller" (include "abmesh.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "abmesh.redisName" -}}
{{- printf "%s-redis" (include "abmesh.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: every object; the selector of one component (call with dict "ctx" . "component" X). */}}
{{- define "abmesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: abmesh
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/name: {{ include "abmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "abmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "abmesh.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "abmesh.componentLabels" -}}
{{ include "abmesh.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "abmesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The pod and container hardening of every Deployment (manifests/base): not values, so no
     release can loosen it.  The UID is the image's (manifests/Dockerfile). */}}
{{- define "abmesh.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
seccompProfile: {type: RuntimeDefault}
{{- end }}

{{- define "abmesh.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end }}

{{- define "abmesh.scheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The store URL when the ConfigMap can hold it (no Secret involved), else "". */}}
{{- define "abmesh.storeUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s:6379/0?prefix=abmesh:" (include "abmesh.redisName" .) }}
{{- else }}
{{- .Values.redis.url }}
{{- end }}
{{- end }}

{{- define "abmesh.storePasswordDir" -}}/var/run/secrets/abmesh-store{{- end }}

{{/* Store settings from Secrets, shared by both containers: env entries, then mounts and
     volumes. */}}
{{- define "abmesh.storeEnv" -}}
{{- with .Values.redis.urlSecret }}{{ if .name }}
- name: ABMESH_STORE
  valueFrom:
    secretKeyRef: {name: {{ .name | quote }}, key: {{ .key | quote }}}
{{- end }}{{ end }}
{{- if .Values.redis.passwordSecret.name }}
- name: ABMESH_STORE_PASSWORD_FILE
  value: {{ include "abmesh.storePasswordDir" . }}/password
{{- end }}
{{- end }}

{{- define "abmesh.storeMounts" -}}
{{- if .Values.redis.passwordSecret.name }}
- {name: store-password, mountPath: {{ include "abmesh.storePasswordDir" . }}, readOnly: true}
{{- end }}
{{- end }}

{{- define "abmesh.storeVolumes" -}}
{{- with .Values.redis.passwordSecret }}{{ if .name }}
- name: store-password
  secret:
    secretName: {{ .name | quote }}
    items: [{key: {{ .key | quote }}, path: password}]
{{- end }}{{ end }}
{{- end }}

{{/* The controller's rights, as RBAC rules: the router's (per controller.router) and, with
     the kubernetes source, the Experiments' and the Leases'.  Nothing more: no wildcards, no
     Secrets, no list/watch on routes (a router reads and patches one named object). */}}
{{- define "abmesh.routerRules" -}}
{{- $router := .Values.controller.router }}
{{- if eq $router "istio" }}
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [get, patch]
{{- else if eq $router "gateway-api" }}
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
{{- else if eq $router "kserve" }}
- apiGroups: [serving.kserve.io]
  resources: [inferenceservices]
  verbs: [get, patch]
{{- else if eq $router "seldon" }}
- apiGroups: [mlops.seldon.io]
  resources: [experiments]
  verbs: [get, create, patch]
{{- else if eq $router "inference-pool" }}
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
- apiGroups: [inference.networking.k8s.io]
  resources: [inferencepools]
  verbs: [get]
{{- else }}
{{- fail (printf "controller.router %q is not one of istio, gateway-api, kserve, seldon, inference-pool" $router) }}
{{- end }}
{{- end }}

{{- /* patch on experiments: the controller adds and removes its finalizer
       (abmesh.io/rollback), so a deleted Experiment is rolled back before it goes. */}}
{{- define "abmesh.experimentRules" -}}
- apiGroups: [abmesh.io]
  resources: [experiments]
  verbs: [get, list, watch, patch]
- apiGroups: [abmesh.io]
  resources: [experiments/status]
  verbs: [patch]
{{- end }}

{{- define "abmesh.leaseRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, create, update, delete]
{{- end }}

{{/* --watch-namespace: one namespace, or every one ("*") with controller.clusterWide. */}}
{{- define "abmesh.watchNamespace" -}}
{{- if .Values.controller.clusterWide }}*{{ else }}{{ default .Release.Namespace .Values.controller.watchNamespace }}{{ end }}
{{- end }}

{{/* Refusals the schema cannot express, each naming the values at fault. */}}
{{- define "abmesh.validate" -}}
{{- $r := .Values.redis }}
{{- $stores := 0 }}
{{- if $r.enabled }}{{ $stores = add1 $stores }}{{ end }}
{{- if $r.url }}{{ $stores = add1 $stores }}{{ end }}
{{- if $r.urlSecret.name }}{{ $stores = add1 $stores }}{{ end }}
{{- if ne $stores 1 }}
{{- fail "redis: set exactly one of redis.enabled (a Redis in the release), redis.url or redis.urlSecret.name (an existing Redis)" }}
{{- end }}
{{- if and $r.urlSecret.name (not $r.urlSecret.key) }}
{{- fail "redis.urlSecret.key: name the key of the Secret that holds the store URL" }}
{{- end }}
{{- if and $r.passwordSecret.name (not $r.passwordSecret.key) }}
{{- fail "redis.passwordSecret.key: name the key of the Secret that holds the password" }}
{{- end }}
{{- if and $r.enabled $r.passwordSecret.name }}
{{- fail "redis.passwordSecret is for an existing Redis: the one of redis.enabled has no password" }}
{{- end }}
{{- with .Values.assignment.apiKeySecret }}{{ if and .name (not .key) }}
{{- fail "assignment.apiKeySecret.key: name the key of the Secret that holds the API key" }}
{{- end }}{{ end }}
{{- range $name, $_ := .Values.settings }}
{{- if or (hasPrefix "ABMESH_STORE" $name) (contains "_TOKEN" $name) (eq $name "ABMESH_INSECURE") (eq $name "ABMESH_API_KEY") }}
{{- fail (printf "settings.%s: not a ConfigMap setting (the store comes from redis, tokens from tokens, the API key from assignment.apiKeySecret; ABMESH_INSECURE would open the data API)" $name) }}
{{- end }}
{{- end }}
{{- $given := 0 }}
{{- range $role, $token := .Values.tokens.values }}{{ if $token }}{{ $given = add1 $given }}{{ end }}{{ end }}
{{- if and $given (ne $given 3) }}
{{- fail "tokens.values: give all three tokens (reader, writer, admin) for the chart to create the Secret, or none and create it yourself" }}
{{- end }}
{{- with .Values.tokens.values }}
{{- if and $given (or (eq .reader .writer) (eq .reader .admin) (eq .writer .admin)) }}
{{- fail "tokens.values: each role needs its own token (two are equal)" }}
{{- end }}
{{- end }}
{{- if and .Values.controller.clusterWide .Values.controller.watchNamespace }}
{{- fail "controller.watchNamespace: with controller.clusterWide the controller watches every namespace; leave it empty" }}
{{- end }}
{{- with .Values.assignment.autoscaling }}{{ if and .enabled (gt (int .minReplicas) (int .maxReplicas)) }}
{{- fail "assignment.autoscaling: minReplicas is above maxReplicas" }}
{{- end }}{{ end }}
{{- end }}
