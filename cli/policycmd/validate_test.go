package policycmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/cli/output"
)

func runValidate(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := NewPolicy()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(append([]string{"validate"}, args...))
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	return out.String(), err
}

func TestValidateCommand(t *testing.T) {
	good := filepath.Join(t.TempDir(), "good.yaml")
	if err := os.WriteFile(good, []byte(`{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: web, namespace: shop}, spec: {podSelector: {}, port: 8080}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runValidate(t, "", "-f", good)
	if err != nil || !strings.Contains(out, "1 policy object(s), no problem") {
		t.Fatalf("good file: %v\n%s", err, out)
	}

	// Two problems on stdin, as JSON: one document listing both, and an
	// error marked as reported (main prints no second document).
	bad := `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: a, namespace: shop}, spec: {targetRef: {kind: Server, name: web}, identitees: ["*"], namespaces: [Shop]}}`
	out, err = runValidate(t, bad, "-f", "-", "-o", "json")
	if err == nil || !errors.As(err, new(output.Reported)) {
		t.Fatalf("bad file: err %v, want a Reported error", err)
	}
	var doc struct {
		Files []struct {
			File     string                             `json:"file"`
			Problems []struct{ Object, Message string } `json:"problems"`
		} `json:"files"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(doc.Files) != 1 || doc.Files[0].File != "-" || len(doc.Files[0].Problems) != 2 ||
		!strings.Contains(doc.Files[0].Problems[0].Message+doc.Files[0].Problems[1].Message, `unknown field "spec.identitees"`) ||
		doc.Files[0].Problems[0].Object != "AuthorizationPolicy shop/a" {
		t.Errorf("document: %+v", doc)
	}

	if _, err := runValidate(t, ""); err == nil || !strings.Contains(err.Error(), "-f FILE is required") {
		t.Errorf("no -f: %v", err)
	}
	if _, err := runValidate(t, "", "-f", filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}
