package k8se2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// extrasCeiling bounds the wait for the background build of the extra
// images (cold: 10 to 20 minutes on 2 cores, started with make e2e).
const extrasCeiling = 45 * time.Minute

// needExtraImages waits until the cluster has the extra images
// (Prometheus, Jaeger): make e2e builds them in the background
// (test/cluster extras) and names its status file in TRELLIS_E2E_EXTRAS.
// Without it (a cluster brought up by hand) the images are assumed
// imported: `make cluster-extras`. The suites that need them are the last
// ones (their files sort last), so the others run while they build.
func needExtraImages(t *testing.T) {
	t.Helper()
	status := os.Getenv("TRELLIS_E2E_EXTRAS")
	if status == "" {
		return
	}
	start := time.Now()
	for {
		b, err := os.ReadFile(status)
		if err == nil {
			if s := strings.TrimSpace(string(b)); s != "ok" {
				t.Fatalf("the extra images (Prometheus, Jaeger) could not be made: %s (log: %s)", s, filepath.Join(filepath.Dir(status), "extras.log"))
			}
			t.Logf("extra images ready (waited %s)", time.Since(start).Round(time.Second))
			return
		}
		if time.Since(start) > extrasCeiling {
			t.Fatalf("the extra images are not ready after %s (log: %s)", extrasCeiling, filepath.Join(filepath.Dir(status), "extras.log"))
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(5 * time.Second):
		}
	}
}
