package localtap

import (
	"testing"

	"github.com/trellis-mesh/trellis/viz/model"
)

func TestPath(t *testing.T) {
	for _, tc := range []struct {
		r    model.Resource
		want string
		err  bool
	}{
		{model.Resource{}, prefix + "tap", false},
		{model.Resource{Kind: "namespaces", Namespace: "demo", Name: "demo"}, prefix + "namespaces/demo/tap", false},
		{model.Resource{Kind: "workloads", Name: "web"}, prefix + "workloads/web/tap", false},
		{model.Resource{Kind: "workloads", Namespace: "demo", Name: "web"}, prefix + "namespaces/demo/workloads/web/tap", false},
		{model.Resource{Kind: "workloads"}, "", true},
		{model.Resource{Kind: "deployments", Name: "web"}, "", true},
	} {
		got, err := Path(tc.r)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("Path(%+v) = %q, %v; want %q, error %v", tc.r, got, err, tc.want, tc.err)
		}
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir); err == nil {
		t.Fatal("opened a directory without an Info file")
	}
	tok := dir + "/token"
	if err := WriteInfo(dir, Info{Addr: "127.0.0.1:1", TokenFile: tok}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil {
		t.Fatal("opened without the token file")
	}
}
