package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
)

// smokePair proves two clusters run side by side on this machine and
// leave it as they found it: it brings up cluster a and cluster b, runs
// smoke in each, has a pod of each call a pod of the other by its pod IP
// (the host routes between the pod CIDRs), brings a down first and shows
// b still serving, brings b down, and compares the machine with what it
// was before: the machine-wide sysctls, the host's links and routes, and
// neither cluster's cgroups, mounts or record left. Both clusters must be
// down when it starts, so that "before" is the machine's own state.
func (h *harness) smokePair(ctx context.Context) error {
	if h.p.name != "a" {
		return errors.New("smoke-pair runs as cluster a (unset TRELLIS_CLUSTER)")
	}
	hb, err := h.sibling("b")
	if err != nil {
		return err
	}
	for _, c := range []*harness{h, hb} {
		if _, err := os.Stat(c.runDir("state.json")); err == nil {
			return fmt.Errorf("cluster %s is up: smoke-pair starts with both down (make cluster-down TRELLIS_CLUSTER=%s)", c.p.name, c.p.name)
		}
	}
	before, err := machineSnapshot(ctx)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := h.up(ctx); err != nil {
		return err
	}
	if err := hb.upIsolated(ctx); err != nil {
		return errors.Join(err, h.down(context.WithoutCancel(ctx)))
	}
	err = h.pairChecks(ctx, hb)
	h.log.Info("smoke-pair: cluster a down first, b still up")
	if derr := h.down(context.WithoutCancel(ctx)); derr != nil {
		err = errors.Join(err, derr)
	}
	if err == nil {
		err = hb.stillServes(ctx)
	}
	if derr := hb.downIsolated(context.WithoutCancel(ctx)); derr != nil {
		err = errors.Join(err, derr)
	}
	if err != nil {
		return err
	}
	after, err := machineSnapshot(ctx)
	if err != nil {
		return err
	}
	if diff := before.diff(after); diff != "" {
		return fmt.Errorf("the machine is not as it was before the two clusters:\n%s", diff)
	}
	h.log.Info("smoke-pair passed: both clusters served side by side, pods reached each other, and the machine is as it was",
		"took", time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// sibling is the harness of another cluster on this machine, sharing the
// build cache.
func (h *harness) sibling(name string) (*harness, error) {
	p, err := profileFor(name)
	if err != nil {
		return nil, err
	}
	s := *h
	s.p, s.dir, s.log = p, defaultDir(name), loggerFor(h.log, p)
	return &s, nil
}

// pairChecks: smoke in each, then each cluster's pod calls the other's.
func (h *harness) pairChecks(ctx context.Context, hb *harness) error {
	for _, c := range []*harness{h, hb} {
		if err := c.smoke(ctx); err != nil {
			return fmt.Errorf("cluster %s: %w", c.p.name, err)
		}
	}
	ips := map[string]string{}
	for _, c := range []*harness{h, hb} {
		ip, err := c.pairEcho(ctx)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", c.p.name, err)
		}
		ips[c.p.name] = ip
	}
	for _, c := range []struct {
		from *harness
		to   string
	}{{h, "b"}, {hb, "a"}} {
		if err := c.from.pairGet(ctx, "http://"+ips[c.to]+":8080/"); err != nil {
			return fmt.Errorf("a pod of cluster %s calling cluster %s's pod: %w", c.from.p.name, c.to, err)
		}
	}
	return nil
}

// pairEcho runs one echo pod in the smoke namespace and returns its IP.
func (h *harness) pairEcho(ctx context.Context) (string, error) {
	if _, err := h.kubectlApply(ctx, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: v1
kind: Pod
metadata:
  name: echo
  namespace: %[1]s
%[2]s`, smokeNS, echoPodSpec(h.imageRef("demo-app")))); err != nil {
		return "", err
	}
	var ip string
	err := poll(ctx, 90*time.Second, 250*time.Millisecond, "pod "+smokeNS+"/echo", func() (bool, error) {
		var p struct {
			Status struct {
				PodIP      string `json:"podIP"`
				Conditions []struct{ Type, Status string }
			} `json:"status"`
		}
		if err := h.apiGet(ctx, "/api/v1/namespaces/"+smokeNS+"/pods/echo", &p); err != nil {
			return false, err
		}
		ip = p.Status.PodIP
		return ip != "" && slices.ContainsFunc(p.Status.Conditions, func(c struct{ Type, Status string }) bool {
			return c.Type == "Ready" && c.Status == "True"
		}), nil
	})
	return ip, err
}

// pairGet runs a Job in this cluster that GETs url, and waits for it.
func (h *harness) pairGet(ctx context.Context, url string) error {
	if _, err := h.kubectlApply(ctx, fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata:
  name: pair-get
  namespace: %s
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      containers:
      - name: get
        image: %s
        imagePullPolicy: Never
        args: ["--url", %q, "--timeout", "60s"]
`, smokeNS, smokeImage, url)); err != nil {
		return err
	}
	if err := h.waitJob(ctx, "pair-get"); err != nil {
		return err
	}
	logs, err := h.kubectl(ctx, "", "-n", smokeNS, "logs", "job/pair-get")
	if err != nil {
		return err
	}
	h.log.Info("smoke-pair: pod -> the other cluster's pod answered", "url", url, "log", oneLine(logs))
	return nil
}

// stillServes: with the other cluster gone, this one's node is Ready and
// its echo pod answers from the host.
func (h *harness) stillServes(ctx context.Context) error {
	if ok, why := h.isUp(ctx); !ok {
		return fmt.Errorf("cluster %s after the other went down: %s", h.p.name, why)
	}
	var p struct {
		Status struct {
			PodIP string `json:"podIP"`
		} `json:"status"`
	}
	if err := h.apiGet(ctx, "/api/v1/namespaces/"+smokeNS+"/pods/echo", &p); err != nil {
		return err
	}
	body, err := hostGet(ctx, "http://"+p.Status.PodIP+":8080/")
	if err != nil {
		return fmt.Errorf("cluster %s's echo pod from the host after the other went down: %w", h.p.name, err)
	}
	h.log.Info("smoke-pair: still serving with the other cluster down", "pod", p.Status.PodIP, "body", oneLine(body))
	return nil
}

// machine is what two clusters could leave changed on the host.
type machine struct {
	sysctls map[string]string
	links   []string // names
	routes  []string
	cgroups []string // any cluster's pod cgroups or cgroupRoot
	record  bool     // machineFile exists
}

func machineSnapshot(ctx context.Context) (machine, error) {
	m := machine{sysctls: readSysctls(append(slices.Clone(machineSysctls), sysctls...))}
	out, err := run(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return m, err
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			m.links = append(m.links, strings.TrimSuffix(f[1], ":"))
		}
	}
	out, err = run(ctx, "ip", "route", "show")
	if err != nil {
		return m, err
	}
	m.routes = strings.Split(strings.TrimSpace(out), "\n")
	for _, p := range profiles {
		m.cgroups = append(m.cgroups, p.kubepodsDirs()...)
		m.cgroups = append(m.cgroups, p.cgroupRootDirs()...)
	}
	m.record = exists(machineFile)
	return m, nil
}

// diff says what differs, "" if nothing.
func (m machine) diff(after machine) string {
	var d []string
	for _, k := range slices.Sorted(maps.Keys(m.sysctls)) {
		if after.sysctls[k] != m.sysctls[k] {
			d = append(d, fmt.Sprintf("sysctl %s: %s before, %s after", k, m.sysctls[k], after.sysctls[k]))
		}
	}
	if !slices.Equal(m.links, after.links) {
		d = append(d, fmt.Sprintf("links: %v before, %v after", m.links, after.links))
	}
	if !slices.Equal(m.routes, after.routes) {
		d = append(d, fmt.Sprintf("routes: %q before, %q after", m.routes, after.routes))
	}
	if len(after.cgroups) > len(m.cgroups) {
		d = append(d, fmt.Sprintf("cgroups left: %v", after.cgroups))
	}
	if after.record != m.record {
		d = append(d, fmt.Sprintf("%s: exists before %v, after %v", machineFile, m.record, after.record))
	}
	return strings.Join(d, "\n")
}
