{{/*
Names, labels and the derived settings shared by the templates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "eprd.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Name of the release's objects: fullnameOverride, else the release name, suffixed with the chart
name unless the release name already contains it. 63 characters at most (DNS label).
*/}}
{{- define "eprd.fullname" -}}
{{- $full := .Values.fullnameOverride -}}
{{- if not $full -}}
{{- $name := include "eprd.name" . -}}
{{- $full = ternary .Release.Name (printf "%s-%s" .Release.Name $name) (contains $name .Release.Name) -}}
{{- end -}}
{{- $full | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels the Deployment, Service, PodDisruptionBudget and ServiceMonitor select pods by. */}}
{{- define "eprd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eprd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "eprd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "eprd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: package-registry
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The ServiceAccount the pods run as. */}}
{{- define "eprd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "eprd.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* repository:tag (tag defaults to appVersion), or repository@digest. */}}
{{- define "eprd.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}
{{- end -}}

{{/* packages.source, checked: image, pvc or configMap, with what each needs. */}}
{{- define "eprd.packagesSource" -}}
{{- $source := .Values.packages.source | default "image" -}}
{{- if not (has $source (list "image" "pvc" "configMap" "gitSync")) -}}
{{- fail (printf "packages.source must be image, pvc, configMap or gitSync, not %q" $source) -}}
{{- end -}}
{{- if and (eq $source "gitSync") (not .Values.packages.gitSync.repository) -}}
{{- fail "packages.source=gitSync needs packages.gitSync.repository, the git repository to clone" -}}
{{- end -}}
{{- if and (eq $source "pvc") (not .Values.packages.pvc.claimName) -}}
{{- fail "packages.source=pvc needs packages.pvc.claimName, the name of an existing PersistentVolumeClaim" -}}
{{- end -}}
{{- if and (eq $source "configMap") (not .Values.packages.configMap.name) -}}
{{- fail "packages.source=configMap needs packages.configMap.name, the name of an existing ConfigMap" -}}
{{- end -}}
{{- $source -}}
{{- end -}}

{{/* A config.yml duration: strings quoted, numbers (seconds) as they are. */}}
{{- define "eprd.duration" -}}
{{- if kindIs "string" . -}}
{{- quote . -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: the preStop pause plus eprd's shutdown timeout must fit in it, or
the kubelet kills eprd while requests are still draining.
*/}}
{{- define "eprd.terminationGracePeriodSeconds" -}}
{{- $needed := add (int .Values.eprd.shutdownTimeoutSeconds) (int .Values.lifecycle.preStopSleepSeconds) -}}
{{- $grace := .Values.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $grace -}}
{{- add $needed (int .Values.terminationGraceMarginSeconds) -}}
{{- else if le (int $grace) (int $needed) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than eprd.shutdownTimeoutSeconds + lifecycle.preStopSleepSeconds (%d)" (int $grace) (int $needed)) -}}
{{- else -}}
{{- int $grace -}}
{{- end -}}
{{- end -}}

{{/* The container environment: the chart's EPR_* variables (unless extraEnv sets the same name), then extraEnv. */}}
{{- define "eprd.env" -}}
{{- $env := list
  (dict "name" "EPR_ADDRESS" "value" (printf "0.0.0.0:%d" (int .Values.containerPort)))
  (dict "name" "EPR_CONFIG" "value" "/package-registry/config.yml")
  (dict "name" "EPR_CACHE_DIR" "value" .Values.eprd.cacheDir)
  (dict "name" "EPR_SHUTDOWN_TIMEOUT" "value" (printf "%ds" (int .Values.eprd.shutdownTimeoutSeconds)))
  (dict "name" "EPR_LOG_LEVEL" "value" (toString .Values.eprd.logLevel))
  (dict "name" "EPR_LOG_TYPE" "value" (toString .Values.eprd.logType))
  (dict "name" "EPR_REQUIRE_PACKAGE_SIGNATURES" "value" (toString .Values.eprd.requirePackageSignatures))
  (dict "name" "EPR_PACKAGE_PATHS_ENABLE_WATCHER" "value" (toString .Values.eprd.watcher.enabled))
  (dict "name" "EPR_PACKAGE_PATHS_WATCHER_POLL" "value" (toString .Values.eprd.watcher.poll))
  (dict "name" "EPR_WORKERS" "value" (printf "%d" (int (default 1 .Values.eprd.workers))))
-}}
{{- if not (kindIs "invalid" .Values.eprd.packagePathsWorkers) -}}
{{- $env = append $env (dict "name" "EPR_PACKAGE_PATHS_WORKERS" "value" (printf "%d" (int .Values.eprd.packagePathsWorkers))) -}}
{{- end -}}
{{- if .Values.metrics.enabled -}}
{{- $env = append $env (dict "name" "EPR_METRICS_ADDRESS" "value" (printf "0.0.0.0:%d" (int .Values.metrics.port))) -}}
{{- end -}}
{{- $overridden := list -}}
{{- range .Values.extraEnv -}}
{{- $overridden = append $overridden .name -}}
{{- end -}}
{{- $result := list -}}
{{- range $env -}}
{{- if not (has .name $overridden) -}}
{{- $result = append $result . -}}
{{- end -}}
{{- end -}}
{{- concat $result .Values.extraEnv | toYaml -}}
{{- end -}}

{{/* The package path of packages.source=gitSync: the link git-sync re-points, and the folder in it. */}}
{{- define "eprd.gitSyncPath" -}}
{{- $link := printf "%s/%s" .Values.packages.mountPath .Values.packages.gitSync.link -}}
{{- if .Values.packages.gitSync.subPath -}}
{{- printf "%s/%s" $link (trimPrefix "/" .Values.packages.gitSync.subPath) -}}
{{- else -}}
{{- $link -}}
{{- end -}}
{{- end -}}

{{/* A git-sync container; "true" as the second argument makes the one-time clone of the init container. */}}
{{- define "eprd.gitSyncContainer" -}}
{{- $root := index . 0 -}}
{{- $once := index . 1 -}}
{{- $sync := $root.Values.packages.gitSync -}}
- name: {{ ternary "git-sync-init" "git-sync" $once }}
  image: "{{ $sync.image.repository }}:{{ $sync.image.tag }}"
  imagePullPolicy: {{ $sync.image.pullPolicy }}
  args:
    - --repo={{ $sync.repository }}
    - --ref={{ $sync.ref }}
    - --root={{ $root.Values.packages.mountPath }}
    - --link={{ $sync.link }}
    - --period={{ $sync.period }}
    {{- if $once }}
    - --one-time
    {{- end }}
  {{- with $sync.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
  volumeMounts:
    - name: packages
      mountPath: {{ $root.Values.packages.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- end -}}
