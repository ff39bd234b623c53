{{/*
Names. `fullname` is `<release>-<chart>` (or just the release when it already contains the
chart name), so the default release `switchboard` gives the binaries' default object names
(`switchboard-gateway-snapshot`, Lease `switchboard-operator`).
*/}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "switchboard.gateway.fullname" -}}{{ include "switchboard.fullname" . }}-gateway{{- end -}}
{{- define "switchboard.gatewayAdmin.fullname" -}}{{ include "switchboard.fullname" . }}-gateway-admin{{- end -}}
{{- define "switchboard.operator.fullname" -}}{{ include "switchboard.fullname" . }}-operator{{- end -}}
{{- define "switchboard.nats.fullname" -}}{{ include "switchboard.fullname" . }}-nats{{- end -}}
{{- define "switchboard.baseConfig.fullname" -}}{{ include "switchboard.fullname" . }}-base-config{{- end -}}
{{/* The Secret the operator writes and the gateways watch (not rendered by the chart). */}}
{{- define "switchboard.snapshot.name" -}}{{ include "switchboard.fullname" . }}-gateway-snapshot{{- end -}}
{{/* The operator's leader-election Lease (created by the operator). */}}
{{- define "switchboard.lease.name" -}}{{ include "switchboard.fullname" . }}-operator{{- end -}}

{{/* Labels on every object; `component` is gateway, operator or nats. */}}
{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "switchboard.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/*
Pod and container security contexts: non-root, read-only root filesystem, no capabilities,
no privilege escalation, the runtime's default seccomp profile. Shared by every container.
*/}}
{{- define "switchboard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "switchboard.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Resources with empty limits/requests left out (an empty CPU limit means none). */}}
{{- define "switchboard.resources" -}}
{{- $out := dict -}}
{{- range $kind := list "requests" "limits" -}}
{{- $vals := dict -}}
{{- range $k, $v := (get $ . | default dict) -}}
{{- if $v -}}{{- $_ := set $vals $k $v -}}{{- end -}}
{{- end -}}
{{- if $vals -}}{{- $_ := set $out $kind $vals -}}{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
Drain arithmetic, in whole seconds (docs/operations.md, "Kubernetes: terminationGracePeriodSeconds"):
  minimum deadline = propagation + longest route window + 5 (the last close handshake)
  deadline         = deadlineSeconds, or that minimum when 0 (shorter: rendering fails)
  grace period     = deadline + exitMarginSeconds (>= 5; the gateway exits at the deadline at the latest)
*/}}
{{- define "switchboard.drain.deadline" -}}
{{- $d := .Values.gateway.drain -}}
{{- $min := add (int $d.propagationSeconds) (int $d.maxWindowSeconds) 5 -}}
{{- if eq (int $d.deadlineSeconds) 0 -}}
{{- $min -}}
{{- else if lt (int $d.deadlineSeconds) (int $min) -}}
{{- fail (printf "gateway.drain.deadlineSeconds (%d) must be at least propagationSeconds + maxWindowSeconds + 5 = %d, or 0 to derive it" (int $d.deadlineSeconds) (int $min)) -}}
{{- else -}}
{{- int $d.deadlineSeconds -}}
{{- end -}}
{{- end -}}

{{- define "switchboard.drain.gracePeriod" -}}
{{- add (include "switchboard.drain.deadline" . | int) (int .Values.gateway.drain.exitMarginSeconds) -}}
{{- end -}}

{{/* The NATS URLs the gateways use: the in-chart servers, else gateway.config.bus.nats.urls. */}}
{{- define "switchboard.nats.urls" -}}
{{- $urls := list -}}
{{- if .Values.nats.enabled -}}
{{- if .Values.gateway.config.bus.nats.urls -}}
{{- fail "gateway.config.bus.nats.urls: leave it empty with nats.enabled (the in-chart NATS is wired automatically)" -}}
{{- end -}}
{{- $nats := include "switchboard.nats.fullname" . -}}
{{- range $i := until (int .Values.nats.replicas) -}}
{{- $urls = append $urls (printf "nats://%s-%d.%s-headless.%s.svc:4222" $nats $i $nats $.Release.Namespace) -}}
{{- end -}}
{{- else -}}
{{- $urls = .Values.gateway.config.bus.nats.urls -}}
{{- end -}}
{{- toJson $urls -}}
{{- end -}}
