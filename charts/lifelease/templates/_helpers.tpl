{{/*
Labels on every object: the ones manifests/ sets (app.kubernetes.io/part-of) and Helm's.
The drift test strips exactly Helm's four (helm.sh/chart, managed-by, instance, version).
*/}}
{{- define "lifelease.labels" -}}
app.kubernetes.io/part-of: lifelease
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "lifelease.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "lifelease.certMode" -}}
{{- $m := .Values.certificates.mode -}}
{{- if not (has $m (list "self-managed" "cert-manager")) -}}
{{- fail (printf "certificates.mode must be self-managed or cert-manager, not %q" $m) -}}
{{- end -}}
{{ $m }}
{{- end }}
