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

{{/*
A GatewayConfig duration (`500ms`, `1m30s`: runs of digits and ms|s|m|h, the schema's pattern)
in milliseconds, failing the render as the gateway would refuse it at start (docs/config.md,
"Conventions": at most 100 years). Call with (dict "key" "gateway.config.…" "value" "…"); the
result is a string (`include`), so `| int64` it.
Each part is bounded before it is multiplied, so no value can overflow int64 (a part of more
than 13 digits is over 100 years whatever its unit).
*/}}
{{- define "switchboard.durationMs" -}}
{{- $v := toString .value -}}
{{- $max := 3155760000000 -}}{{- /* 100 years of 365.25 days, in ms: the gateway's limit */ -}}
{{- if not (regexMatch "^([0-9]+(ms|s|m|h))+$" $v) -}}
{{- fail (printf "%s (%s): expected a duration such as 500ms, 10s, 5m or 1h30m" .key $v) -}}
{{- end -}}
{{- $units := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 -}}
{{- $total := 0 -}}
{{- range $part := regexFindAll "[0-9]+(ms|s|m|h)" $v -1 -}}
{{- $digits := regexReplaceAll "^0+" (regexFind "^[0-9]+" $part) "" -}}
{{- $unit := get $units (regexReplaceAll "^[0-9]+" $part "") | int64 -}}
{{- if or (gt (len $digits) 13) (gt (atoi (default "0" $digits) | int64) (div $max $unit)) -}}
{{- fail (printf "%s (%s): too long, durations are at most 100 years" $.key $v) -}}
{{- end -}}
{{- $total = add $total (mul (atoi (default "0" $digits)) $unit) -}}
{{- end -}}
{{- if gt (int64 $total) (int64 $max) -}}
{{- fail (printf "%s (%s): too long, durations are at most 100 years" .key $v) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/*
The base GatewayConfig values the gateway would refuse at start (docs/config.md), failed at
render with the values key: every gateway pod would otherwise crash-loop (exit 64). The schema
bounds single values; these are the rules it cannot express.
*/}}
{{- define "switchboard.gateway.checkConfig" -}}
{{- $c := .Values.gateway.config -}}
{{- /* Every socket is 0.0.0.0:<port>: no two of them may share a port. */ -}}
{{- $ports := list (list "gateway.config.listener.port" (int $c.listener.port)) -}}
{{- if $c.tls.enabled -}}
{{- $ports = append $ports (list "gateway.config.tls.port" (int $c.tls.port)) -}}
{{- end -}}
{{- $ports = append $ports (list "gateway.config.admin.port" (int $c.admin.port)) -}}
{{- range $i, $a := $ports -}}
{{- range $b := slice $ports (add $i 1) -}}
{{- if eq (index $a 1) (index $b 1) -}}
{{- $first := ternary $b $a (eq (index $b 0) "gateway.config.tls.port") -}}
{{- $other := ternary $a $b (eq (index $b 0) "gateway.config.tls.port") -}}
{{- fail (printf "%s (%d): must differ from %s (%d), the gateway binds both on 0.0.0.0" (index $first 0) (index $first 1) (index $other 0) (index $other 1)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* Durations: the gateway's minimums, and at most 100 years each. */ -}}
{{- range $name := list "handshakeTimeout" "upstreamTimeout" "httpResponseTimeout" -}}
{{- $key := printf "gateway.config.limits.%s" $name -}}
{{- $v := get $c.limits $name -}}
{{- $ms := include "switchboard.durationMs" (dict "key" $key "value" $v) | int64 -}}
{{- if and (ne $name "httpResponseTimeout") (eq $ms 0) -}}
{{- fail (printf "%s (%s): must be more than 0s" $key $v) -}}
{{- end -}}
{{- end -}}
{{- $ttl := $c.bus.nats.presenceTtl -}}
{{- if lt (include "switchboard.durationMs" (dict "key" "gateway.config.bus.nats.presenceTtl" "value" $ttl) | int64) 1000 -}}
{{- fail (printf "gateway.config.bus.nats.presenceTtl (%s): must be at least 1s (presence entries are refreshed every third of it)" $ttl) -}}
{{- end -}}
{{- end -}}
