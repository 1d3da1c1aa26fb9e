{{/* Names ---------------------------------------------------------------- */}}
{{- define "kova.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kova.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "kova.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "kova.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* "kova.component" (dict "root" $ "component" "operator") -> <fullname>-operator */}}
{{- define "kova.component" -}}
{{- printf "%s-%s" (include "kova.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels --------------------------------------------------------------- */}}
{{- define "kova.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kova.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kova.labels" -}}
{{ include "kova.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: kova
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Image ---------------------------------------------------------------- */}}
{{- define "kova.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* ServiceAccount names --------------------------------------------------- */}}
{{- define "kova.serviceAccountName" -}}
{{- $sa := index .root.Values .component "serviceAccount" -}}
{{- if $sa.create -}}
{{- default (include "kova.component" .) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* Placement -------------------------------------------------------------- */}}
{{- define "kova.placementUrl" -}}
{{- if .Values.placement.enabled -}}
{{- printf "%s://%s.%s.svc:%d" (ternary "https" "http" (not (empty .Values.placement.tls.existingSecret))) (include "kova.component" (dict "root" . "component" "placement")) .Release.Namespace (int .Values.placement.port) -}}
{{- else -}}
{{- required "placement.externalUrl is required when placement.enabled is false" .Values.placement.externalUrl -}}
{{- end -}}
{{- end -}}

{{- define "kova.placementAuthSecret" -}}
{{- default (include "kova.component" (dict "root" . "component" "placement-auth")) .Values.placement.auth.existingSecret -}}
{{- end -}}

{{- define "kova.postgresqlSecret" -}}
{{- default (include "kova.component" (dict "root" . "component" "postgresql")) .Values.postgresql.existingSecret -}}
{{- end -}}

{{/* A value kept across upgrades: the existing Secret's key, else a new random one. */}}
{{- define "kova.keptSecret" -}}
{{- $existing := lookup "v1" "Secret" .namespace .name -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 40 -}}
{{- end -}}
{{- end -}}

{{/* Pod security ------------------------------------------------------------ */}}
{{- define "kova.nonRootPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kova.nonRootContainerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The token env var Placement's clients send. */}}
{{- define "kova.placementTokenEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "kova.placementAuthSecret" .root }}
      key: admin-token
{{- end -}}

{{/* The CA that signed Placement's certificate, for the operator and the agents:
an env entry (name given), a volumeMount and a volume; nothing without TLS. */}}
{{- define "kova.placementCAEnv" -}}
{{- if .root.Values.placement.tls.existingSecret -}}
- name: {{ .name }}
  value: /etc/kova/placement-ca/ca.crt
{{- end }}
{{- end -}}

{{- define "kova.placementCAMount" -}}
{{- if .Values.placement.tls.existingSecret -}}
- name: placement-ca
  mountPath: /etc/kova/placement-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "kova.placementCAVolume" -}}
{{- if .Values.placement.tls.existingSecret -}}
- name: placement-ca
  secret:
    secretName: {{ .Values.placement.tls.existingSecret }}
    items:
      - key: {{ .Values.placement.tls.caKey }}
        path: ca.crt
    defaultMode: 0444
{{- end }}
{{- end -}}

{{/* CEL: the node of the pod the request's service-account token is bound to, or "". */}}
{{- define "kova.nodeNameVariable" -}}
'authentication.kubernetes.io/node-name' in request.userInfo.extra && size(request.userInfo.extra['authentication.kubernetes.io/node-name']) > 0 ? request.userInfo.extra['authentication.kubernetes.io/node-name'][0] : ''
{{- end -}}
