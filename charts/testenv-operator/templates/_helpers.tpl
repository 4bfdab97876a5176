{{- define "testenv-operator.name" -}}testenv-operator{{- end -}}

{{- define "testenv-operator.labels" -}}
app.kubernetes.io/name: testenv-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "testenv-operator.selector" -}}
app.kubernetes.io/name: testenv-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "testenv-operator.serviceAccountName" -}}
{{- default "testenv-operator" .Values.serviceAccount.name -}}
{{- end -}}
