package cni

import (
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/redirect"
)

const meshedConf = `{
  "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "trellis-cni",
  "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {
    "trellis.io/proxy-version": "dev",
    "config.trellis.io/skip-outbound-ports": "25,8000-8100",
    "config.trellis.io/skip-inbound-ports": "9000"}},
  "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": [{"address": "10.1.0.5/24", "interface": 0}]}
}`

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"trellis-cni"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := redirect.Config{ProxyUID: 2102, InboundPort: 4143, OutboundPort: 4140,
		SkipInbound: []redirect.PortRange{{Lo: 4143, Hi: 4143}, {Lo: 4190, Hi: 4191}}}
	if redirect.Render(c.Redirect, redirect.IPv4, nil) != redirect.Render(want, redirect.IPv4, nil) {
		t.Errorf("defaults render differently:\n%s\nwant:\n%s", redirect.Render(c.Redirect, redirect.IPv4, nil), redirect.Render(want, redirect.IPv4, nil))
	}
	if c.IPv6Mode != redirect.IPv6Auto {
		t.Errorf("IPv6Mode = %q, want auto", c.IPv6Mode)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct{ name, conf, wantErr string }{
		{"not json", `{`, "parsing"},
		{"bad skip", `{"type":"trellis-cni","skipOutboundPorts":"x"}`, "skipOutboundPorts"},
		{"same ports", `{"type":"trellis-cni","inboundPort":4140}`, "both 4140"},
		{"bad ipv6", `{"type":"trellis-cni","ipv6":"sometimes"}`, "ipv6"},
		{"port too big", `{"type":"trellis-cni","inboundPort":70000}`, "parsing"},
		{"annotations not strings", `{"type":"trellis-cni","runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"a":1}}}`, "parsing"},
		{"huge", `{"type":"` + strings.Repeat("x", maxConfigBytes) + `"}`, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.conf))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseConfig = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	withAnn := func(ann string) string {
		return `{"cniVersion":"1.0.0","type":"trellis-cni","runtimeConfig":{"io.kubernetes.cri.pod-annotations":` + ann + `}}`
	}
	tests := []struct {
		name       string
		conf       string
		args       string
		want       bool
		reason     string
		wantOut    string // FormatPorts of the skip-outbound ports
		wantIn     string
		wantErrSub string
	}{
		{name: "meshed", conf: meshedConf, args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-1", want: true,
			reason: "meshed", wantOut: "25,8000-8100", wantIn: "4143,4190-4191,9000"},
		{name: "kube-system", conf: meshedConf, args: "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=x", reason: "excluded"},
		{name: "trellis-system", conf: meshedConf, args: "K8S_POD_NAMESPACE=trellis-system;K8S_POD_NAME=x", reason: "excluded"},
		{name: "no namespace", conf: meshedConf, args: "", reason: "not a Kubernetes pod"},
		{name: "not injected", conf: withAnn(`{"trellis.io/inject":"enabled"}`), args: "K8S_POD_NAMESPACE=demo", reason: "no injected proxy"},
		{name: "opted out", conf: withAnn(`{"trellis.io/proxy-version":"dev","trellis.io/inject":"disabled"}`), args: "K8S_POD_NAMESPACE=demo", reason: "opted out"},
		{name: "no annotations", conf: `{"type":"trellis-cni"}`, args: "K8S_POD_NAMESPACE=demo", reason: "capability"},
		{name: "bad annotation", conf: withAnn(`{"trellis.io/proxy-version":"dev","config.trellis.io/skip-outbound-ports":"smtp"}`),
			args: "K8S_POD_NAMESPACE=demo;K8S_POD_NAME=w", wantErrSub: "skip-outbound-ports"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.conf))
			if err != nil {
				t.Fatal(err)
			}
			a, err := ParseArgs(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			d, err := c.Decide(a)
			if tt.wantErrSub != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrSub) {
					t.Fatalf("Decide = %+v, %v; want error containing %q", d, err, tt.wantErrSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Redirect != tt.want || !strings.Contains(d.Reason, tt.reason) {
				t.Fatalf("Decide = %v %q, want %v and reason containing %q", d.Redirect, d.Reason, tt.want, tt.reason)
			}
			if !tt.want {
				return
			}
			if got := redirect.FormatPorts(d.Config.SkipOutbound); got != tt.wantOut {
				t.Errorf("skip outbound = %s, want %s", got, tt.wantOut)
			}
			if got := redirect.FormatPorts(d.Config.SkipInbound); got != tt.wantIn {
				t.Errorf("skip inbound = %s, want %s", got, tt.wantIn)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	a, err := ParseArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc;")
	if err != nil {
		t.Fatal(err)
	}
	if a.PodNamespace != "demo" || a.PodName != "web-1" {
		t.Fatalf("ParseArgs = %+v", a)
	}
	if _, err := ParseArgs("K8S_POD_NAMESPACE"); err == nil {
		t.Fatal("ParseArgs without '=': want an error")
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(meshedConf), "K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web")
	f.Add([]byte(`{"type":"trellis-cni","skipInboundPorts":"1-65535","ipv6":"true"}`), "")
	f.Add([]byte(`{"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"trellis.io/proxy-version":"x","config.trellis.io/skip-inbound-ports":"1,2,3-9"}}}`), "K8S_POD_NAMESPACE=a")
	f.Add([]byte(`[]`), "a=b;c")
	f.Add([]byte(`{"prevResult":{"cniVersion":"0.3.1"}}`), "=;=")
	f.Fuzz(func(t *testing.T, conf []byte, args string) {
		c, err := ParseConfig(conf)
		if err != nil {
			return
		}
		if err := c.Redirect.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted an invalid config: %v", err)
		}
		a, err := ParseArgs(args)
		if err != nil {
			return
		}
		d, err := c.Decide(a)
		if err != nil || !d.Redirect {
			return
		}
		if err := d.Config.Validate(); err != nil {
			t.Fatalf("Decide produced an invalid config: %v", err)
		}
		_ = redirect.Render(d.Config, redirect.IPv6, nil)
	})
}
