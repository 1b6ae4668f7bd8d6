{{/*
These templates are rendered by Helm and by `trellis install` (install/
package), which implements only the functions used here: include,
required, fail, default, quote, b64enc, toYaml, indent, nindent, dict,
lookup (which answers nothing there) and text/template's own. Keep to that subset.
*/}}

{{- define "trellis.labels" -}}
app.kubernetes.io/part-of: trellis
app.kubernetes.io/managed-by: trellis
{{- end }}

{{- define "trellis.namespace" -}}
{{- if ne .Release.Namespace "trellis-system" }}
{{- fail (printf "Trellis installs into namespace trellis-system (got %q): proxies find the control plane there" .Release.Namespace) }}
{{- end }}
{{- .Release.Namespace }}
{{- end }}

{{- define "trellis.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "trellis.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .name (include "trellis.tag" .root) }}
{{- end }}
