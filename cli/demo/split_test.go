package demo

import (
	"os"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/store"
)

func TestParseSplit(t *testing.T) {
	sp, err := ParseSplit("books=v1:90,v2:10")
	if err != nil || sp.Service != "books" || len(sp.Weights) != 2 || sp.Weights[0] != (VersionWeight{"v1", 90}) || sp.Weights[1] != (VersionWeight{"v2", 10}) {
		t.Fatalf("ParseSplit = %+v, %v", sp, err)
	}
	for _, bad := range []string{"books", "books=", "web=v1:100", "authors=v1:1", "books=v3:10", "books=v1:90,v1:10",
		"books=v1:-1", "books=v1:0,v2:0", "books=v1:x", "books=v1:1000001", "nosuch=v1:1"} {
		if _, err := ParseSplit(bad); err == nil || !strings.Contains(err.Error(), "--split") {
			t.Errorf("ParseSplit(%q) = %v, want an error naming --split", bad, err)
		}
	}
}

// The store file of a split demo is one the controller accepts, and it
// routes books to the version Services with the split's weights.
func TestSplitStore(t *testing.T) {
	plan, err := NewPlan(t.TempDir(), testPorts(PortsNeeded()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Split, err = ParseSplit("books=v1:90,v2:10"); err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(plan.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := store.Parse(data)
	if err != nil {
		t.Fatalf("the controller refuses the split demo's store: %v", err)
	}
	if len(cfg.Routes.Routes) != 1 || cfg.Routes.Routes[0].Meta.Name != "books-split" {
		t.Fatalf("routes %+v", cfg.Routes.Routes)
	}
	for _, v := range []string{"v1", "v2"} {
		a, _ := authority.Parse("books-" + v + ".demo:80")
		tg := cfg.Resolve(a, Namespace)
		if tg.Service == nil || len(tg.Service.Backends[80]) != 1 || tg.Service.Backends[80][0].Workload.Name != "books-"+v {
			t.Errorf("books-%s is not backed by exactly the %s workload: %+v", v, v, tg)
		}
	}
	if a, _ := authority.Parse("books.demo:80"); len(cfg.Resolve(a, Namespace).Service.Backends[80]) != 2 {
		t.Error("books lost a version: callers of books must still reach both")
	}
}
