package checkcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/trellis-mesh/trellis/cli/check"
	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
)

// stubAPIServer answers what `trellis check --pre` asks, over TLS, like a
// fresh v1.36 cluster: SSARs answer allowed (unless denied), dry-run pods
// come back as sent, no CRDs, no trellis-system namespace.
func stubAPIServer(t *testing.T, allowed bool) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"major": "1", "minor": "36", "gitVersion": "v1.36.3"})
	})
	mux.HandleFunc("POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews", func(w http.ResponseWriter, r *http.Request) {
		obj, err := decodeBody(r)
		ssar, isSSAR := obj.(*authv1.SelfSubjectAccessReview)
		if err != nil || !isSSAR {
			t.Errorf("ssar body (%s): %v %T", r.Header.Get("Content-Type"), err, obj)
			writeJSON(w, 400, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400})
			return
		}
		ssar.Status.Allowed = allowed
		ssar.APIVersion, ssar.Kind = "authorization.k8s.io/v1", "SelfSubjectAccessReview"
		writeJSON(w, 201, ssar)
	})
	mux.HandleFunc("POST /api/v1/namespaces/default/pods", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("dryRun") != "All" {
			t.Errorf("pod created without dryRun=All: %s", r.URL)
			writeJSON(w, 400, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400})
			return
		}
		obj, err := decodeBody(r)
		pod, isPod := obj.(*corev1.Pod)
		if err != nil || !isPod {
			t.Errorf("pod body (%s): %v %T", r.Header.Get("Content-Type"), err, obj)
			writeJSON(w, 400, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400})
			return
		}
		pod.APIVersion, pod.Kind = "v1", "Pod"
		writeJSON(w, 201, pod)
	})
	mux.HandleFunc("GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": map[string]any{}, "items": []any{}})
	})
	mux.HandleFunc("GET /api/v1/namespaces/trellis-system", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 404, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
			"code": 404, "message": `namespaces "trellis-system" not found`, "details": map[string]any{"name": "trellis-system", "kind": "namespaces"}})
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// decodeBody reads a request body in whatever encoding client-go chose
// (protobuf for built-in types).
func decodeBody(r *http.Request) (runtime.Object, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(b, nil, nil)
	return obj, err
}

// writeKubeconfig points a kubeconfig at srv, trusting its certificate.
func writeKubeconfig(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	cfg := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "stub",
		"clusters": []any{map[string]any{"name": "stub", "cluster": map[string]any{
			"server": srv.URL, "certificate-authority-data": ca}}},
		"users":    []any{map[string]any{"name": "stub", "user": map[string]any{"token": "t"}}},
		"contexts": []any{map[string]any{"name": "stub", "context": map[string]any{"cluster": "stub", "user": "stub"}}},
	}
	b, err := json.Marshal(cfg) // JSON is YAML
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func buildTrellis(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(t.TempDir(), "trellis")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/trellis")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return bin
}

// TestProcessExitStatus runs the real trellis binary against a TLS stub
// API server: 0 when every check passes, 1 with the JSON report still on
// stdout when one fails.
func TestProcessExitStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the trellis binary")
	}
	bin := buildTrellis(t)
	for _, tt := range []struct {
		allowed  bool
		wantCode int
	}{{true, 0}, {false, 1}} {
		t.Run(fmt.Sprintf("allowed=%v", tt.allowed), func(t *testing.T) {
			kubeconfig := writeKubeconfig(t, stubAPIServer(t, tt.allowed))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "check", "--pre", "-o", "json", "--kubeconfig", kubeconfig)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			var rep check.Report
			if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
				t.Fatalf("stdout is not the report: %v\n%s", err, stdout.String())
			}
			for _, c := range rep.Checks {
				want := check.OK
				if !tt.allowed && c.Name == check.PermissionsCheck.Name {
					want = check.Fail
				}
				if c.Status != want {
					t.Errorf("%s: %s %q, want %s", c.Name, c.Status, c.Message, want)
				}
			}
			if tt.wantCode != 0 && !strings.Contains(stderr.String(), "trellis: checks failed") {
				t.Errorf("stderr = %q", stderr.String())
			}
		})
	}
}

// TestRealClusterPre runs `check --pre` against a real API server: the
// harness's cluster (TRELLIS_KUBECONFIG) or one started on loopback from
// TRELLIS_K8S_BIN (see apiservertest); skipped without either.
func TestRealClusterPre(t *testing.T) {
	kubeconfig := apiservertest.Kubeconfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := New()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--pre", "-o", "json", "--kubeconfig", kubeconfig})
	err := cmd.ExecuteContext(ctx)
	var rep check.Report
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
		t.Fatalf("report: %v (command: %v)\n%s", jerr, err, out.String())
	}
	must := map[string]bool{
		check.APICheck.Name: true, check.VersionCheck.Name: true, check.NativeSidecarCheck.Name: true,
		check.PermissionsCheck.Name: true, check.ClockSkewCheck.Name: true,
	}
	for _, c := range rep.Checks {
		t.Logf("%s %s: %s", check.Mark(c.Status), c.Name, c.Message)
		if must[c.Name] && c.Status != check.OK {
			t.Errorf("%s: %s %q (hint %q)", c.Name, c.Status, c.Message, c.Hint)
		}
		delete(must, c.Name)
	}
	if len(must) != 0 {
		t.Errorf("checks not run: %v", must)
	}
}
