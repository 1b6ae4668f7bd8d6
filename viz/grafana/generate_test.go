package grafana

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite dashboards/*.json from the specs")

// TestCommittedMatchSpecs: the committed JSON is what the specs generate
// (go test ./viz/grafana -run TestCommittedMatchSpecs -update rewrites it).
func TestCommittedMatchSpecs(t *testing.T) {
	committed := Files()
	for _, d := range Specs() {
		want, err := Render(d)
		if err != nil {
			t.Fatal(err)
		}
		name := FileName(d)
		if *update {
			if err := os.WriteFile(filepath.Join("dashboards", name), want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !bytes.Equal(committed[name], want) {
			t.Errorf("dashboards/%s is not what the specs generate: go test ./viz/grafana -run TestCommittedMatchSpecs -update", name)
		}
		delete(committed, name)
	}
	for name := range committed {
		if !*update {
			t.Errorf("dashboards/%s: no spec generates it", name)
		}
	}
}
