package gatewayapi

import (
	"bytes"
	"compress/gzip"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "refresh the embedded CRDs from the pinned module")

// The embedded CRDs are the pinned module's, byte for byte, and say the
// BundleVersion and their channel.
func TestEmbeddedMatchModule(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("locate the Gateway API module: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	for _, ch := range []string{Standard, Experimental} {
		for _, r := range Resources {
			want, err := os.ReadFile(filepath.Join(dir, "config/crd", ch, "gateway.networking.k8s.io_"+r+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				var b bytes.Buffer
				zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
				zw.Write(want)
				zw.Close()
				if err := os.WriteFile(filepath.Join(ch, r+".yaml.gz"), b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := CRD(ch, r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s/%s differs from the pinned module's: go test ./install/gatewayapi -update", ch, r)
			}
			for _, ann := range []string{"gateway.networking.k8s.io/bundle-version: " + BundleVersion, "gateway.networking.k8s.io/channel: " + ch} {
				if !bytes.Contains(got, []byte(ann)) {
					t.Errorf("%s/%s lacks %q", ch, r, ann)
				}
			}
		}
	}
	if _, err := CRD("beta", "httproutes"); err == nil {
		t.Error("an unknown channel is accepted")
	}
}
