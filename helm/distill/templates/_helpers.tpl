{{/* Names. KubeRay appends up to 6 characters to a RayJob's name for its cluster and needs DNS-1035 labels:
     47 characters at most (its MaxRayJobNameLength). */}}
{{- define "distill.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 47 | trimSuffix "-" -}}
{{- end -}}

{{- define "distill.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "distill.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "distill.selectorLabels" -}}
app.kubernetes.io/name: {{ include "distill.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "distill.labels" -}}
helm.sh/chart: {{ include "distill.chart" . }}
{{ include "distill.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: distill
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "distill.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "distill.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "distill.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "distill.claimName" -}}
{{- default (printf "%s-artifacts" (include "distill.fullname" .)) .Values.artifacts.persistence.existingClaim -}}
{{- end -}}

{{/* The run directory of the chart's spec, on the artifacts volume. */}}
{{- define "distill.outputDir" -}}
{{- printf "%s/runs/%s" (trimSuffix "/" .Values.artifacts.mountPath) .Values.spec.name -}}
{{- end -}}

{{/* The spec as the ConfigMap holds it: the values' spec with output_dir on the artifacts volume. */}}
{{- define "distill.specYaml" -}}
{{- $spec := deepCopy .Values.spec -}}
{{- $_ := set $spec "output_dir" (include "distill.outputDir" .) -}}
{{- toYaml $spec -}}
{{- end -}}

{{/* The job's command line: the spec from the ConfigMap, output on the artifacts volume. */}}
{{- define "distill.entrypoint" -}}
{{- $args := list "python" (printf "%s/jobs/distill.py" (trimSuffix "/" .Values.appDir)) "--spec" "/etc/distill/spec.yaml" "--output-dir" (include "distill.outputDir" .) -}}
{{- with .Values.artifacts.objectStore.url -}}
{{- $args = concat $args (list "--upload" (printf "%s/runs/%s" (trimSuffix "/" .) $.Values.spec.name)) -}}
{{- end -}}
{{- $args = concat $args .Values.job.extraArgs -}}
{{- $quoted := list -}}
{{- range $args -}}
{{- $s := toString . -}}
{{- /* POSIX shell quoting: plain words as they are, anything else in single quotes */ -}}
{{- if regexMatch "^[A-Za-z0-9_./:=@%+,-]+$" $s -}}
{{- $quoted = append $quoted $s -}}
{{- else -}}
{{- $quoted = append $quoted (printf "'%s'" (replace "'" "'\"'\"'" $s)) -}}
{{- end -}}
{{- end -}}
{{- join " " $quoted -}}
{{- end -}}

{{/* rayStartParams for a group: its own, plus its custom resources as the JSON string `ray start --resources`
     takes (KubeRay passes the value through, quotes included). */}}
{{- define "distill.rayStartParams" -}}
{{- $params := deepCopy (default dict .group.rayStartParams) -}}
{{- with .group.rayResources -}}
{{- $_ := set $params "resources" (printf "%q" (toJson .)) -}}
{{- end -}}
{{- toYaml $params -}}
{{- end -}}

{{/* Container resources with the group's GPUs as nvidia.com/gpu (requests must equal limits for GPUs). */}}
{{- define "distill.resources" -}}
{{- $res := deepCopy (default dict .group.resources) -}}
{{- if gt (int .group.gpus) 0 -}}
{{- $limits := default dict $res.limits -}}
{{- $_ := set $limits "nvidia.com/gpu" (int .group.gpus) -}}
{{- $_ := set $res "limits" $limits -}}
{{- if $res.requests -}}
{{- $_ := set $res.requests "nvidia.com/gpu" (int .group.gpus) -}}
{{- end -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* One Ray pod template. Args: root (the chart context), group (values), container ("ray-head" | "ray-worker"),
     head (bool). */}}
{{- define "distill.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
metadata:
  labels:
    {{- include "distill.labels" $root | nindent 4 }}
    distill.io/group: {{ .groupName }}
  annotations:
    checksum/spec: {{ include "distill.specYaml" $root | sha256sum }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- with (include "distill.serviceAccountName" $root) }}
  serviceAccountName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .container }}
      image: {{ include "distill.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      {{- if .head }}
      ports:
        - {containerPort: 6379, name: gcs-server}
        - {containerPort: 8265, name: dashboard}
        - {containerPort: 10001, name: client}
      {{- end }}
      env:
        # Model downloads and the converted built-in model land on the shared volume: fetched once per cluster.
        - {name: HF_HOME, value: {{ printf "%s/cache/huggingface" (trimSuffix "/" $v.artifacts.mountPath) | quote }}}
        - {name: DISTILL_CACHE, value: {{ printf "%s/cache/distill" (trimSuffix "/" $v.artifacts.mountPath) | quote }}}
        - {name: DISTILL_ARTIFACTS, value: {{ $v.artifacts.mountPath | quote }}}
      {{- if or $v.apiKeys.existingSecret $v.artifacts.objectStore.existingSecret }}
      envFrom:
        {{- with $v.apiKeys.existingSecret }}
        - secretRef: {name: {{ . }}}
        {{- end }}
        {{- with $v.artifacts.objectStore.existingSecret }}
        - secretRef: {name: {{ . }}}
        {{- end }}
      {{- end }}
      resources:
        {{- include "distill.resources" . | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        - {name: spec, mountPath: /etc/distill, readOnly: true}
        - {name: artifacts, mountPath: {{ $v.artifacts.mountPath }}}
        - {name: dshm, mountPath: /dev/shm}
  volumes:
    - name: spec
      configMap: {name: {{ include "distill.fullname" $root }}-spec}
    - name: artifacts
      {{- if $v.artifacts.persistence.enabled }}
      persistentVolumeClaim: {claimName: {{ include "distill.claimName" $root }}}
      {{- else }}
      emptyDir: {}
      {{- end }}
    - name: dshm
      emptyDir: {medium: Memory, sizeLimit: {{ $v.shmSizeLimit }}}
{{- end -}}

{{/* The RayCluster spec: used as is by the RayCluster (mode cluster) and inside the RayJob (mode job). */}}
{{- define "distill.rayClusterSpec" -}}
{{- $v := .Values -}}
rayVersion: {{ $v.rayVersion | quote }}
{{- if $v.rayAuth.enabled }}
authOptions:
  mode: token
  {{- with $v.rayAuth.secretName }}
  secretName: {{ . }}
  {{- end }}
{{- end }}
{{- if $v.autoscaling.enabled }}
enableInTreeAutoscaling: true
autoscalerOptions:
  idleTimeoutSeconds: {{ $v.autoscaling.idleTimeoutSeconds }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
{{- end }}
headGroupSpec:
  serviceType: {{ $v.head.serviceType }}
  rayStartParams:
    {{- toYaml $v.head.rayStartParams | nindent 4 }}
  template:
    {{- include "distill.podTemplate" (dict "root" . "group" (merge (dict "gpus" 0) $v.head) "groupName" "head" "container" "ray-head" "head" true) | nindent 4 }}
workerGroupSpecs:
{{- range $name := list "teacher" "trainer" "verifier" }}
{{- $g := index $v.workerGroups $name }}
{{- if $g.enabled }}
  - groupName: {{ $name }}
    replicas: {{ $g.replicas }}
    minReplicas: {{ $g.minReplicas }}
    maxReplicas: {{ $g.maxReplicas }}
    rayStartParams:
      {{- include "distill.rayStartParams" (dict "group" $g) | nindent 6 }}
    template:
      {{- include "distill.podTemplate" (dict "root" $ "group" $g "groupName" $name "container" "ray-worker" "head" false) | nindent 6 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Cross-field rules the schema cannot say well, each failing with the fix. */}}
{{- define "distill.validate" -}}
{{- $v := .Values -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" (include "distill.fullname" .)) -}}
{{- fail (printf "name %q is not a DNS-1035 label (lowercase letters, digits, '-', starting with a letter), which KubeRay requires: set fullnameOverride" (include "distill.fullname" .)) -}}
{{- end -}}
{{- if hasKey $v.spec "output_dir" -}}
{{- fail (printf "spec.output_dir is set by the chart (%s, on the artifacts volume): remove it from the values" (include "distill.outputDir" .)) -}}
{{- end -}}
{{- if hasKey (default dict $v.spec.sampling) "false" -}}
{{- fail "spec.sampling has a key 'false': Helm reads a bare `n:` as the boolean false (YAML 1.1). Quote it: \"n\": 4" -}}
{{- end -}}
{{- if and (not $v.artifacts.persistence.enabled) (not $v.artifacts.objectStore.url) -}}
{{- fail "artifacts: with persistence.enabled=false runs are written to pod scratch space and lost; set artifacts.objectStore.url (the job uploads each run there) or enable persistence" -}}
{{- end -}}
{{- range $name, $g := $v.workerGroups -}}
{{- if and $g.enabled (or (lt (int $g.replicas) (int $g.minReplicas)) (gt (int $g.replicas) (int $g.maxReplicas))) -}}
{{- fail (printf "workerGroups.%s: replicas (%d) must lie between minReplicas (%d) and maxReplicas (%d)" $name (int $g.replicas) (int $g.minReplicas) (int $g.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $v.mode "job") $v.job.driverOnTrainer (not $v.workerGroups.trainer.enabled) -}}
{{- fail "job.driverOnTrainer needs workerGroups.trainer.enabled=true (or set job.driverOnTrainer=false to run the driver on the head)" -}}
{{- end -}}
{{- $teacherGpus := mulf (float64 (default 0 $v.spec.teacher.num_gpus)) (float64 (default 1 $v.spec.teacher.replicas)) -}}
{{- if and $v.workerGroups.teacher.enabled (gt $teacherGpus (float64 (mul $v.workerGroups.teacher.maxReplicas $v.workerGroups.teacher.gpus))) -}}
{{- fail (printf "spec.teacher asks for %v GPUs (replicas x num_gpus) but the teacher group has at most %d (maxReplicas x gpus)" $teacherGpus (mul $v.workerGroups.teacher.maxReplicas $v.workerGroups.teacher.gpus)) -}}
{{- end -}}
{{- end -}}
