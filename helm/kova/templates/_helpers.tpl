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

{{/* A value kept across upgrades: the existing Secret's key, else a new random
one; the same one for every template of a rendering (cached in .root.Values),
so that a pod's checksum of the Secret sees the value the Secret gets. */}}
{{- define "kova.keptSecret" -}}
{{- $cache := .root.Values -}}
{{- $id := printf "_kept/%s/%s/%s" .namespace .name .key -}}
{{- if not (hasKey $cache $id) -}}
{{- $existing := lookup "v1" "Secret" .namespace .name -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- $_ := set $cache $id (index $existing.data .key | b64dec) -}}
{{- else -}}
{{- $_ := set $cache $id (randAlphaNum 40) -}}
{{- end -}}
{{- end -}}
{{- index $cache $id -}}
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

{{/* The stream path's certificates ----------------------------------------- */}}
{{- define "kova.apiTLSSecret" -}}
{{- default (include "kova.component" (dict "root" . "component" "api-tls")) .Values.api.tls.existingSecret -}}
{{- end -}}

{{- define "kova.agentTLSSecret" -}}
{{- default (include "kova.component" (dict "root" . "component" "agent-stream-tls")) .Values.agent.streamTLS.existingSecret -}}
{{- end -}}

{{- define "kova.agentMigrationTLSSecret" -}}
{{- default (include "kova.component" (dict "root" . "component" "agent-migration-tls")) .Values.agent.migrationTLS.existingSecret -}}
{{- end -}}

{{/* Whether the agents get a migration client certificate: the chart's
(made with the stream certificates) or agent.migrationTLS.existingSecret. */}}
{{- define "kova.agentMigrationTLS" -}}
{{- if and .Values.api.enabled (or .Values.agent.migrationTLS.existingSecret (not .Values.api.tls.existingSecret)) -}}
true
{{- end -}}
{{- end -}}

{{/* YAML {ca, apiCrt, apiKey, agentCrt, agentKey, moverCrt, moverKey}: the
Secrets in the cluster when all three exist (kept across upgrades), else a
new CA and certificates (the CA's key is kept nowhere, so a release made
before the agents' migration certificate gets all three anew on its
upgrade). Made once per rendering (cached in .Values), so every template
sees the same. */}}
{{- define "kova.streamCerts" -}}
{{- if not (hasKey .Values "_streamCerts") -}}
{{- $ns := .Release.Namespace -}}
{{- $api := lookup "v1" "Secret" $ns (include "kova.apiTLSSecret" .) -}}
{{- $agent := lookup "v1" "Secret" $ns (include "kova.agentTLSSecret" .) -}}
{{- $mover := lookup "v1" "Secret" $ns (include "kova.agentMigrationTLSSecret" .) -}}
{{- $out := dict -}}
{{- if and $api $api.data $agent $agent.data $mover $mover.data -}}
{{- $_ := set $out "ca" (index $api.data "ca.crt" | b64dec) -}}
{{- $_ := set $out "apiCrt" (index $api.data "tls.crt" | b64dec) -}}
{{- $_ := set $out "apiKey" (index $api.data "tls.key" | b64dec) -}}
{{- $_ := set $out "agentCrt" (index $agent.data "tls.crt" | b64dec) -}}
{{- $_ := set $out "agentKey" (index $agent.data "tls.key" | b64dec) -}}
{{- $_ := set $out "moverCrt" (index $mover.data "tls.crt" | b64dec) -}}
{{- $_ := set $out "moverKey" (index $mover.data "tls.key" | b64dec) -}}
{{- else -}}
{{- $svc := include "kova.component" (dict "root" . "component" "api") -}}
{{- $ca := genCA "kova-stream-ca" 3650 -}}
{{- $apiCert := genSignedCert "kova-api" nil (list (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns)) 3650 $ca -}}
{{- $agentCert := genSignedCert "kova-agent" nil (list "kova-agent") 3650 $ca -}}
{{- /* the agents' client certificate for sending disks to each other */ -}}
{{- $moverCert := genSignedCert "kova-agent-mover" nil nil 3650 $ca -}}
{{- $_ := set $out "ca" $ca.Cert -}}
{{- $_ := set $out "apiCrt" $apiCert.Cert -}}
{{- $_ := set $out "apiKey" $apiCert.Key -}}
{{- $_ := set $out "agentCrt" $agentCert.Cert -}}
{{- $_ := set $out "agentKey" $agentCert.Key -}}
{{- $_ := set $out "moverCrt" $moverCert.Cert -}}
{{- $_ := set $out "moverKey" $moverCert.Key -}}
{{- end -}}
{{- $_ := set .Values "_streamCerts" (toYaml $out) -}}
{{- end -}}
{{- index .Values "_streamCerts" -}}
{{- end -}}

{{/* The CA the APIService and the agents trust: from the generated
certificates, or api.tls.caBundle with an existing Secret. */}}
{{- define "kova.streamCA" -}}
{{- if .Values.api.tls.existingSecret -}}
{{- required "api.tls.caBundle (PEM) is required with api.tls.existingSecret" .Values.api.tls.caBundle -}}
{{- else -}}
{{- (include "kova.streamCerts" . | fromYaml).ca -}}
{{- end -}}
{{- end -}}

{{/* An alert's runbook annotations (prometheusrule.yaml): its section of
     docs/runbooks.md, and the published URL when runbookBaseUrl is set. */}}
{{- define "kova.runbook" -}}
runbook: "docs/runbooks.md#{{ .alert }}"
{{- with .root.Values.prometheusRule.runbookBaseUrl }}
runbook_url: "{{ . }}#{{ $.alert }}"
{{- end }}
{{- end }}

{{/* The image store's certificate ------------------------------------------ */}}
{{- define "kova.imagesTLSSecret" -}}
{{- default (include "kova.component" (dict "root" . "component" "images-tls")) .Values.images.tls.existingSecret -}}
{{- end -}}

{{/* The image store's URL: what it records in the Images it stores (its
--public-url) and what the agents send their token to. */}}
{{- define "kova.imagesUrl" -}}
{{- printf "https://%s.%s.svc:%d" (include "kova.component" (dict "root" . "component" "images")) .Release.Namespace (int .Values.images.port) -}}
{{- end -}}

{{/* Whether the agents get a CA file for the image store: the chart's own
certificate, or images.tls.caKey of images.tls.existingSecret. */}}
{{- define "kova.imagesCA" -}}
{{- if and .Values.images.enabled (or (not .Values.images.tls.existingSecret) .Values.images.tls.caKey) -}}
true
{{- end -}}
{{- end -}}

{{/* YAML {ca, crt, key}: the store's certificate (a CA of its own, the
Service's names, and localhost / 127.0.0.1 for `kubectl port-forward`):
the Secret in the cluster when it exists (kept across upgrades), else a new
CA and certificate. Made once per rendering (cached in .Values). */}}
{{- define "kova.imagesCerts" -}}
{{- if not (hasKey .Values "_imagesCerts") -}}
{{- $ns := .Release.Namespace -}}
{{- $existing := lookup "v1" "Secret" $ns (include "kova.imagesTLSSecret" .) -}}
{{- $out := dict -}}
{{- if and $existing $existing.data (hasKey $existing.data "ca.crt") -}}
{{- $_ := set $out "ca" (index $existing.data "ca.crt" | b64dec) -}}
{{- $_ := set $out "crt" (index $existing.data "tls.crt" | b64dec) -}}
{{- $_ := set $out "key" (index $existing.data "tls.key" | b64dec) -}}
{{- else -}}
{{- $svc := include "kova.component" (dict "root" . "component" "images") -}}
{{- $ca := genCA "kova-images-ca" 3650 -}}
{{- $names := list (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) (printf "%s.%s" $svc $ns) $svc "localhost" -}}
{{- $cert := genSignedCert "kova-images" (list "127.0.0.1") $names 3650 $ca -}}
{{- $_ := set $out "ca" $ca.Cert -}}
{{- $_ := set $out "crt" $cert.Cert -}}
{{- $_ := set $out "key" $cert.Key -}}
{{- end -}}
{{- $_ := set .Values "_imagesCerts" (toYaml $out) -}}
{{- end -}}
{{- index .Values "_imagesCerts" -}}
{{- end -}}

{{/* A pod template's checksum of generated certificates (the YAML of
"kova.streamCerts" or "kova.imagesCerts"), the same whether they were made
now or found in the cluster: read back first, since toYaml drops the last
value's final newline, which the Secrets then store without. */}}
{{- define "kova.certsChecksum" -}}
{{- fromYaml . | toYaml | sha256sum | trunc 16 -}}
{{- end -}}
