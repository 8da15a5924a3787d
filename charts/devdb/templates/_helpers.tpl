{{- define "devdb.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: devdb
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "devdb.controllerSelector" -}}
app.kubernetes.io/name: devdb-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "devdb.proxySelector" -}}
app.kubernetes.io/name: devdb-proxy
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "devdb.image" -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
