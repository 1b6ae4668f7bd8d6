package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

const smokeNS = "trellis-smoke"

// smoke proves the cluster runs the demo application: a 2-replica
// Deployment behind a Service answers from the host (ClusterIP through
// kube-proxy) and from a pod (through CoreDNS and the bridge).
func (h *harness) smoke(ctx context.Context) error {
	if ok, why := h.isUp(ctx); !ok {
		return fmt.Errorf("cluster is not up: %s", why)
	}
	t0 := time.Now()
	demo := h.imageRef("demo-app")
	out, err := h.ctr(ctx, "images", "ls", "-q", "name=="+normalizeRef(demo))
	if err != nil || strings.TrimSpace(out) == "" {
		return fmt.Errorf("image %s is not in the cluster: run `make images` first", demo)
	}
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
  namespace: %[1]s
spec:
  replicas: 2
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
%[5]s---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: %[1]s
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 8080, targetPort: http}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: get
  namespace: %[1]s
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 120
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      automountServiceAccountToken: false
      containers:
      - name: get
        image: %[3]s
        imagePullPolicy: Never
        args: ["--url", "http://echo.%[1]s.svc.cluster.local:8080/", "--timeout", "90s"]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: init
  namespace: %[1]s
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 120
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      automountServiceAccountToken: false
      containers:
      - name: trellis-init
        image: %[4]s
        imagePullPolicy: Never
        command: ["/trellis-init"]
        args: ["--proxy-uid", "2102", "--inbound-port", "4143", "--outbound-port", "4140", "--skip-inbound-ports", "4143,4191"]
        securityContext:
          runAsUser: 0
          runAsNonRoot: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL], add: [NET_ADMIN, NET_RAW]}
        volumeMounts:
        - {name: xtables-lock, mountPath: /run}
      volumes:
      - name: xtables-lock
        emptyDir: {}
`, smokeNS, demo, smokeImage, h.imageRef("init"), indent(echoPodSpec(demo), "    "))
	if _, err := h.kubectlApply(ctx, manifest); err != nil {
		return err
	}
	if err := h.waitDeployment(ctx, smokeNS, "echo", 2, 120*time.Second); err != nil {
		return err
	}
	h.log.Info("smoke: 2 echo replicas ready", "after", time.Since(t0).Round(100*time.Millisecond))

	var svc struct {
		Spec struct {
			ClusterIP string `json:"clusterIP"`
		} `json:"spec"`
	}
	if err := h.apiGet(ctx, "/api/v1/namespaces/"+smokeNS+"/services/echo", &svc); err != nil {
		return err
	}
	url := "http://" + svc.Spec.ClusterIP + ":8080/"
	var body string
	err = poll(ctx, 30*time.Second, 250*time.Millisecond, "GET "+url+" from the host", func() (bool, error) {
		b, err := hostGet(ctx, url)
		body = b
		return err == nil, err
	})
	if err != nil {
		return err
	}
	h.log.Info("smoke: host -> ClusterIP answered", "url", url, "body", oneLine(body))

	if err := h.waitJob(ctx, "get"); err != nil {
		return err
	}
	logs, err := h.kubectl(ctx, "", "-n", smokeNS, "logs", "job/get")
	if err != nil {
		return err
	}
	h.log.Info("smoke: pod -> echo.trellis-smoke.svc.cluster.local answered (DNS, Service, bridge)", "log", oneLine(logs))

	if err := h.waitJob(ctx, "init"); err != nil {
		return fmt.Errorf("the init image (Debian iptables + trellis-init) in a pod: %w", err)
	}
	logs, err = h.kubectl(ctx, "", "-n", smokeNS, "logs", "job/init")
	if err != nil {
		return err
	}
	h.log.Info("smoke: trellis-init programmed iptables in a pod with NET_ADMIN+NET_RAW", "log", oneLine(logs))

	if _, err := h.kubectl(ctx, "", "delete", "namespace", smokeNS, "--wait=true", "--timeout=60s"); err != nil {
		return err
	}
	h.log.Info("smoke passed", "took", time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// echoPodSpec is the spec of a pod serving the demo app's echo on :8080.
func echoPodSpec(image string) string {
	return fmt.Sprintf(`spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  containers:
  - name: echo
    image: %s
    imagePullPolicy: Never
    args: ["--role", "echo", "--listen", "0.0.0.0:8080"]
    ports:
    - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /healthz, port: 8080}
      periodSeconds: 1
    securityContext:
      runAsNonRoot: true
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
`, image)
}

// indent prefixes every line of s with prefix.
func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}

func hostGet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	// No environment proxy: the ClusterIP is only reachable from this host.
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// normalizeRef is the name containerd's CRI stores for a Docker-style
// reference: "trellis/proxy:x" is "docker.io/trellis/proxy:x".
func normalizeRef(ref string) string {
	first, _, found := strings.Cut(ref, "/")
	if !found {
		return "docker.io/library/" + ref
	}
	if strings.ContainsAny(first, ".:") || first == "localhost" {
		return ref
	}
	return "docker.io/" + ref
}

// waitJob waits for job name in the smoke namespace to succeed; a failure
// carries the job's log.
func (h *harness) waitJob(ctx context.Context, name string) error {
	return poll(ctx, 150*time.Second, 500*time.Millisecond, "job "+smokeNS+"/"+name, func() (bool, error) {
		var j struct {
			Status struct {
				Succeeded int `json:"succeeded"`
				Failed    int `json:"failed"`
			} `json:"status"`
		}
		if err := h.apiGet(ctx, "/apis/batch/v1/namespaces/"+smokeNS+"/jobs/"+name, &j); err != nil {
			return false, err
		}
		if j.Status.Failed > 0 {
			logs, _ := h.kubectl(ctx, "", "-n", smokeNS, "logs", "job/"+name)
			return false, errors.New("job failed: " + oneLine(logs))
		}
		return j.Status.Succeeded > 0, nil
	})
}
