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

{{- /* Kubernetes 1.30 or later, as Chart.yaml's kubeVersion says (checked here too, for renderers
that skip that): the admission policy is admissionregistration.k8s.io/v1, and the controller's
preStop sleep is on by default, from 1.30. */ -}}
{{- define "devdb.requireKubernetes" -}}
{{- if not (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "DevDB needs Kubernetes 1.30 or later, not %s: its admission policy is a ValidatingAdmissionPolicy of admissionregistration.k8s.io/v1 and its controller stops with a preStop sleep, both from 1.30 on. Upgrade the cluster (with helm template, pass --kube-version)." .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end -}}

{{- /* The IP address type of a load balancer, called with (list $ $lb $name): its ipAddressType,
or dualstack on an IPv6 cluster (an NLB reaches IPv6 pods only when dual-stack) and ipv4 on an
IPv4 one. */ -}}
{{- define "devdb.lbIpAddressType" -}}
{{- $root := index . 0 }}{{ $lb := index . 1 }}{{ $name := index . 2 -}}
{{- $type := $lb.ipAddressType | default (ternary "dualstack" "ipv4" (eq $root.Values.ipFamily "IPv6")) -}}
{{- if not (has $type (list "ipv4" "dualstack")) -}}
{{- fail (printf "loadBalancers.%s.ipAddressType is ipv4 or dualstack, not %s" $name $type) -}}
{{- end -}}
{{- if and (eq $root.Values.ipFamily "IPv6") (ne $type "dualstack") -}}
{{- fail (printf "loadBalancers.%s.ipAddressType must be dualstack with ipFamily IPv6: an NLB registers IPv6 pods only when it is dual-stack" $name) -}}
{{- end -}}
{{- $type -}}
{{- end -}}

{{- /* A load balancer Service's annotations, called with (list $ $lb $name $ours): the user's
(loadBalancers.<name>.annotations) and the chart's ($ours). Attribute lists (keys ending in
-attributes) are joined, unless both set one attribute; any other key the chart sets is the
chart's alone. The chart sets cross-zone load balancing and the IP address type from $lb. */ -}}
{{- define "devdb.lbAnnotations" -}}
{{- $root := index . 0 }}{{ $lb := index . 1 }}{{ $name := index . 2 }}{{ $ours := deepCopy (index . 3) -}}
{{- $_ := set $ours "service.beta.kubernetes.io/aws-load-balancer-ip-address-type" (include "devdb.lbIpAddressType" (list $root $lb $name)) -}}
{{- $_ := set $ours "service.beta.kubernetes.io/aws-load-balancer-attributes" (printf "load_balancing.cross_zone.enabled=%t" (ne $lb.crossZone false)) -}}
{{- $all := deepCopy ($lb.annotations | default dict) -}}
{{- range $key, $value := $ours -}}
{{- $theirs := get $all $key -}}
{{- if and $theirs (hasSuffix "-attributes" $key) -}}
{{- $theirAttributes := list -}}
{{- range splitList "," $theirs }}{{ $theirAttributes = append $theirAttributes (first (splitList "=" .) | trim) }}{{ end -}}
{{- range splitList "," $value -}}
{{- $attribute := first (splitList "=" .) -}}
{{- if has $attribute $theirAttributes -}}
{{- fail (printf "loadBalancers.%s.annotations sets %s in %s, which the chart sets (see values.yaml)" $name $attribute $key) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $all $key (printf "%s,%s" $theirs $value) -}}
{{- else if $theirs -}}
{{- fail (printf "loadBalancers.%s.annotations sets %s, which the chart sets (see values.yaml)" $name $key) -}}
{{- else -}}
{{- $_ := set $all $key $value -}}
{{- end -}}
{{- end -}}
{{- toYaml $all -}}
{{- end -}}
