package policycmd

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const scrape = `# TYPE trellis_inbound_authz_allow_total counter
trellis_inbound_authz_allow_total{server="server/books-9101",route="",authz="from-web",client_id="spiffe://cluster.local/ns/demo/sa/web",tls="true"} 40
trellis_inbound_authz_allow_total{server="default:all-unauthenticated",route="probes",authz="probes",client_id="",tls="false"} 7
trellis_inbound_authz_allow_total{server="default:all-unauthenticated",route="",authz="",client_id="",tls="false"} 3
# TYPE trellis_inbound_authz_deny_total counter
trellis_inbound_authz_deny_total{server="server/books-9101",route="",client_id="spiffe://cluster.local/ns/demo/sa/loadgen",tls="true",reason="unauthorized"} 5
# TYPE trellis_inbound_authz_audit_total counter
trellis_inbound_authz_audit_total{server="server/books-9101",route="",client_id="spiffe://cluster.local/ns/other/sa/x",tls="true",port="9101"} 2
# TYPE trellis_responses_total counter
trellis_responses_total{direction="inbound"} 99
`

func TestParseMetrics(t *testing.T) {
	got, err := ParseMetrics(strings.NewReader(scrape))
	if err != nil {
		t.Fatal(err)
	}
	want := []Sample{
		{Decision: Allow, Server: "default:all-unauthenticated", Count: 3},
		{Decision: Allow, Server: "default:all-unauthenticated", Route: "probes", Authz: "probes", Count: 7},
		{Decision: Allow, Server: "server/books-9101", Authz: "from-web", ClientID: "spiffe://cluster.local/ns/demo/sa/web", TLS: true, Count: 40},
		{Decision: Audit, Server: "server/books-9101", ClientID: "spiffe://cluster.local/ns/other/sa/x", TLS: true, Port: 9101, Count: 2},
		{Decision: Deny, Server: "server/books-9101", ClientID: "spiffe://cluster.local/ns/demo/sa/loadgen", TLS: true, Reason: "unauthorized", Count: 5},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if _, err := ParseMetrics(strings.NewReader("trellis_inbound_authz_allow_total{server=\"x\" 1\n")); err == nil {
		t.Error("malformed exposition accepted")
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add(scrape)
	f.Add("trellis_inbound_authz_allow_total{port=\"99999\"} NaN\n")
	f.Fuzz(func(t *testing.T, s string) {
		ss, err := ParseMetrics(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, x := range ss {
			if x.Count < 0 || x.Port > 65535 {
				t.Fatalf("sample %+v", x)
			}
		}
		_ = Table([]Pod{{Samples: ss}})
	})
}

func TestDelta(t *testing.T) {
	a := Sample{Decision: Allow, Server: "s", Count: 10}
	d := Sample{Decision: Deny, Server: "s", Reason: "r", Count: 4}
	got := Delta([]Sample{a, d}, []Sample{{Decision: Allow, Server: "s", Count: 15}, {Decision: Deny, Server: "s", Reason: "r", Count: 1}, {Decision: Audit, Server: "s", Count: 2}})
	want := []Sample{{Decision: Allow, Server: "s", Count: 5}, {Decision: Deny, Server: "s", Reason: "r", Count: 1}, {Decision: Audit, Server: "s", Count: 2}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v (a counter that went down restarted from zero)", got, want)
	}
}

func TestTable(t *testing.T) {
	ss, err := ParseMetrics(strings.NewReader(scrape))
	if err != nil {
		t.Fatal(err)
	}
	rows := Table([]Pod{{Name: "books-v1", ServiceAccount: "books", Samples: ss}, {Name: "books-v2", ServiceAccount: "books", Samples: ss[2:3]}})
	want := []Row{
		{Workload: "books", Server: "default:all-unauthenticated", Policies: []string{}, Allowed: 3},
		{Workload: "books", Server: "default:all-unauthenticated", Route: "probes", Policies: []string{"probes"}, Allowed: 7},
		{Workload: "books", Server: "server/books-9101", Policies: []string{"from-web"}, Allowed: 80, Denied: 5, Audited: 2,
			DenyReasons: map[string]float64{"unauthorized": 5}},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("got  %+v\nwant %+v", rows, want)
	}
}

func sample(decision, client string, tls bool, count float64) Sample {
	return Sample{Decision: decision, Server: "x", ClientID: client, TLS: tls, Count: count}
}

func TestSuggest(t *testing.T) {
	web := "spiffe://cluster.local/ns/demo/sa/web"
	lg := "spiffe://cluster.local/ns/demo/sa/loadgen"
	pods := []Pod{
		{Name: "web", Namespace: "demo", ServiceAccount: "web", Labels: map[string]string{"app": "web", "pod-template-hash": "a"}, Ports: []uint32{8080},
			Samples: []Sample{sample(Allow, lg, true, 10), sample(Allow, "", false, 1), {Decision: Allow, Route: ProbesRoute, Count: 9}}},
		{Name: "books-v1", Namespace: "demo", ServiceAccount: "books", Labels: map[string]string{"app": "books", "version": "v1"}, Ports: []uint32{9101},
			Samples: []Sample{sample(Allow, web, true, 10), sample(Deny, lg, true, 3)}},
		{Name: "books-v2", Namespace: "demo", ServiceAccount: "books", Labels: map[string]string{"app": "books", "version": "v2"}, Ports: []uint32{9101},
			Samples: []Sample{sample(Audit, "spiffe://cluster.local/ns/demo/sa/authors", true, 1)}},
		// Only probes: no Server.
		{Name: "authors", Namespace: "demo", ServiceAccount: "authors", Labels: map[string]string{"app": "authors"}, Ports: []uint32{7000},
			Samples: []Sample{{Decision: Allow, Route: ProbesRoute, Count: 9}}},
	}
	sug, err := Suggest(pods, true)
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	if err := writeYAMLDocs(&got, sug.Objects); err != nil {
		t.Fatal(err)
	}
	want := `---
apiVersion: policy.trellis.io/v1alpha1
kind: Server
metadata:
  name: books-9101
  namespace: demo
spec:
  accessPolicy: audit
  podSelector:
    matchLabels:
      app: books
  port: 9101
---
apiVersion: policy.trellis.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: books-9101-clients
  namespace: demo
spec:
  identities:
  - spiffe://cluster.local/ns/demo/sa/authors
  - spiffe://cluster.local/ns/demo/sa/web
  targetRef:
    group: policy.trellis.io
    kind: Server
    name: books-9101
---
apiVersion: policy.trellis.io/v1alpha1
kind: Server
metadata:
  name: web-8080
  namespace: demo
spec:
  accessPolicy: audit
  podSelector:
    matchLabels:
      app: web
  port: 8080
---
apiVersion: policy.trellis.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: web-8080-clients
  namespace: demo
spec:
  identities:
  - spiffe://cluster.local/ns/demo/sa/loadgen
  targetRef:
    group: policy.trellis.io
    kind: Server
    name: web-8080
  unauthenticated: true
`
	if got.String() != want {
		t.Errorf("got\n%s\nwant\n%s", got.String(), want)
	}
	if len(sug.Notes) != 1 || !strings.Contains(sug.Notes[0], "3 calls from "+lg+" were denied") {
		t.Errorf("notes %q", sug.Notes)
	}
	enforce, err := Suggest(pods, false)
	if err != nil || enforce.Objects[0].Spec.(ServerSpec).AccessPolicy != AccessDeny {
		t.Errorf("without --audit: %v %+v", err, enforce.Objects)
	}
}

func TestSuggestRefuses(t *testing.T) {
	one := []Sample{sample(Allow, "", false, 1)}
	tests := []struct {
		name string
		pods []Pod
		want string
	}{
		{"no port label, two ports", []Pod{{Name: "a", Namespace: "n", ServiceAccount: "a", Labels: map[string]string{"app": "a"}, Ports: []uint32{1, 2}, Samples: one}},
			"pod n/a: its proxy's metrics carry no port"},
		{"no common label", []Pod{
			{Name: "a1", Namespace: "n", ServiceAccount: "a", Labels: map[string]string{"v": "1"}, Ports: []uint32{1}, Samples: one},
			{Name: "a2", Namespace: "n", ServiceAccount: "a", Labels: map[string]string{"v": "2"}, Ports: []uint32{1}}},
			"service account a: its pods share no label"},
		{"selector selects another workload", []Pod{
			{Name: "a", Namespace: "n", ServiceAccount: "a", Labels: map[string]string{"tier": "x"}, Ports: []uint32{1}, Samples: one},
			{Name: "b", Namespace: "n", ServiceAccount: "b", Labels: map[string]string{"tier": "x"}}},
			"also select pod b of service account b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Suggest(tt.pods, false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestSuggestSince: --since keeps the clients the proxy decided for since
// the cutoff (from trellis_inbound_authz_last_seen_timestamp_seconds), and
// refuses a proxy that does not say when.
func TestSuggestSince(t *testing.T) {
	const seen = scrape + `# TYPE trellis_inbound_authz_last_seen_timestamp_seconds gauge
trellis_inbound_authz_last_seen_timestamp_seconds{decision="allow",server="server/books-9101",route="",client_id="spiffe://cluster.local/ns/demo/sa/web",tls="true"} 1800000000
trellis_inbound_authz_last_seen_timestamp_seconds{decision="audit",server="server/books-9101",route="",client_id="spiffe://cluster.local/ns/other/sa/x",tls="true"} 1799990000
trellis_inbound_authz_last_seen_timestamp_seconds{decision="allow",server="default:all-unauthenticated",route="probes",client_id="",tls="false"} 1800000000
trellis_inbound_authz_last_seen_timestamp_seconds{decision="allow",server="default:all-unauthenticated",route="",client_id="",tls="false"} 1800000000
trellis_inbound_authz_last_seen_timestamp_seconds{decision="deny",server="server/books-9101",route="",client_id="spiffe://cluster.local/ns/demo/sa/loadgen",tls="true"} 1800000000
`
	samples, err := ParseMetrics(strings.NewReader(seen))
	if err != nil {
		t.Fatal(err)
	}
	pods := []Pod{{Name: "books-1", Namespace: "demo", ServiceAccount: "books", Labels: map[string]string{"app": "books"}, Ports: []uint32{9101}, Samples: samples}}
	recent, err := Recent(pods, time.Unix(1_800_000_000-3600, 0))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range recent[0].Samples {
		ids = append(ids, s.Decision+" "+s.ClientID)
	}
	// The audited client x was last seen ~2.8 h before: left out.
	want := []string{"allow ", "allow ", "allow spiffe://cluster.local/ns/demo/sa/web", "deny spiffe://cluster.local/ns/demo/sa/loadgen"}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("since the cutoff: %q, want %q", ids, want)
	}
	sug, err := Suggest(recent, false)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := writeSuggestion(&out, "yaml", sug); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "ns/other/sa/x") || !strings.Contains(out.String(), "ns/demo/sa/web") {
		t.Errorf("the suggestion allows what was not seen lately, or not what was:\n%s", out.String())
	}

	old, err := ParseMetrics(strings.NewReader(scrape))
	if err != nil {
		t.Fatal(err)
	}
	pods[0].Samples = old
	if _, err := Recent(pods, time.Unix(1_800_000_000, 0)); err == nil || !strings.Contains(err.Error(), "demo/books-1") {
		t.Errorf("a proxy without last-seen times: %v, want an error naming its pod", err)
	}
}
