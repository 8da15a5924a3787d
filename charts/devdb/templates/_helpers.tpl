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

{{- /* An image of .Values.images, called with (list $ .Values.images.<name>): its tag, or the
chart's appVersion (with -pg<pgVersion> for the database image). */ -}}
{{- define "devdb.image" -}}
{{- $root := index . 0 }}{{ $image := index . 1 -}}
{{- $default := $root.Chart.AppVersion }}{{ if $image.pgVersion }}{{ $default = printf "%s-pg%v" $default $image.pgVersion }}{{ end -}}
{{ $image.repository }}:{{ $image.tag | default $default }}
{{- end -}}

{{- define "devdb.anyAddress" -}}
{{- if eq .Values.ipFamily "IPv6" }}[::]{{ else if eq .Values.ipFamily "IPv4" }}0.0.0.0{{ else }}{{ fail "ipFamily must be IPv4 or IPv6" }}{{ end }}
{{- end -}}

{{- /* A map as key=value pairs, comma-separated (flags of the controller). */ -}}
{{- define "devdb.pairs" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}{{ $pairs = append $pairs (printf "%s=%s" $k $v) }}{{ end }}
{{- join "," $pairs }}
{{- end -}}

{{- /* The Secret holding the admin token the proxies follow the controller with: the user's
(controller.adminTokenSecret) or the one the chart generates. */ -}}
{{- define "devdb.adminTokenSecret" -}}
{{- .Values.controller.adminTokenSecret | default (printf "%s-admin-token" .Release.Name) -}}
{{- end -}}

{{- /* Seconds a stopping proxy keeps working: proxy.drainDelay + proxy.shutdownGrace ("Ns" each). */ -}}
{{- define "devdb.proxyDrainSeconds" -}}
{{- $drain := .Values.proxy.drainDelay | toString -}}
{{- $grace := .Values.proxy.shutdownGrace | toString -}}
{{- if not (and (regexMatch "^[0-9]+s$" $drain) (regexMatch "^[0-9]+s$" $grace)) -}}
{{- fail "proxy.drainDelay and proxy.shutdownGrace are seconds, like 130s" -}}
{{- end -}}
{{- add (trimSuffix "s" $drain | atoi) (trimSuffix "s" $grace | atoi) -}}
{{- end -}}
