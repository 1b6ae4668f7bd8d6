package checkcmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/trellis-mesh/trellis/cli/check"
)

// fakeEnv is a fresh cluster of the given version where SSARs answer
// allowed and dry-run pods come back as sent.
func fakeEnv(gitVersion, minor string, allowed bool) EnvFunc {
	return func(kubeconfig, context string) (*check.Env, error) {
		cs := fake.NewClientset()
		cs.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: gitVersion, Major: "1", Minor: minor}
		cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
			r := a.(k8stesting.CreateAction).GetObject().(*authv1.SelfSubjectAccessReview).DeepCopy()
			r.Status.Allowed = allowed
			return true, r, nil
		})
		cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
			return true, a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy(), nil
		})
		return &check.Env{Kube: cs}, nil
	}
}

func execute(t *testing.T, build EnvFunc, args ...string) (string, error) {
	t.Helper()
	cmd := newCommand(build)
	var out, stderr bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&stderr) // cobra's own messages; stdout stays the report
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestExitStatus(t *testing.T) {
	tests := []struct {
		name    string
		build   EnvFunc
		args    []string
		wantErr error
		substr  string
	}{
		{"all good", fakeEnv("v1.36.3", "36", true), []string{"--pre"}, nil, "✔ all"},
		{"warnings only", fakeEnv("v1.28.4", "28", true), []string{"--pre"}, nil, "‼ 4 passed, 1 warning, 2 skipped"},
		{"a failure", fakeEnv("v1.36.3", "36", false), []string{"--pre"}, ErrChecksFailed, "✘ can create what trellis install creates"},
		{"post-install on a fresh cluster", fakeEnv("v1.36.3", "36", true), nil, ErrChecksFailed, `not run: "control plane namespace exists" failed`},
		{"cannot build the env", func(string, string) (*check.Env, error) { return nil, errors.New("no kubeconfig") }, []string{"--pre"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := execute(t, tt.build, tt.args...)
			if tt.name == "cannot build the env" {
				if err == nil || !strings.Contains(err.Error(), "no kubeconfig") {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v\n%s", err, tt.wantErr, out)
			}
			if !strings.Contains(out, tt.substr) {
				t.Fatalf("output lacks %q:\n%s", tt.substr, out)
			}
		})
	}
}

func TestJSONOutput(t *testing.T) {
	out, err := execute(t, fakeEnv("v1.36.3", "36", false), "--pre", "-o", "json")
	if !errors.Is(err, ErrChecksFailed) {
		t.Fatalf("err = %v", err)
	}
	var rep check.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, out)
	}
	if rep.Success || rep.Summary.Fail != 1 || len(rep.Checks) != len(check.PreChecks()) {
		t.Fatalf("report %+v", rep)
	}
	for _, c := range rep.Checks {
		if c.Name == "can create what trellis install creates" {
			if c.Status != check.Fail || c.Hint == "" || !strings.HasSuffix(c.Doc, "#permissions") {
				t.Errorf("permissions check = %+v", c)
			}
		}
	}
}

func TestProxyMode(t *testing.T) {
	out, err := execute(t, fakeEnv("v1.36.3", "36", true), "--proxy", "-n", "shop", "-o", "json")
	if err != nil {
		t.Fatalf("err = %v\n%s", err, out)
	}
	var rep check.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Checks) != len(check.ProxyChecks()) {
		t.Fatalf("%d checks, want the %d proxy checks", len(rep.Checks), len(check.ProxyChecks()))
	}
	if !strings.Contains(rep.Checks[1].Message, "namespace shop") {
		t.Errorf("meshed pods check not limited to shop: %+v", rep.Checks[1])
	}
}

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--pre", "--proxy"},
		{"-o", "xml"},
		{"--pre", "-n", "shop"},
		{"extra"},
		{"--multicluster"},
		{"--peer-context", "west"},
		{"--multicluster", "--proxy", "--peer-context", "west"},
	} {
		if _, err := execute(t, fakeEnv("v1.36.3", "36", true), args...); err == nil || errors.Is(err, ErrChecksFailed) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
}

// TestMulticlusterMode: --multicluster runs only the multicluster checks,
// with the peer built from --peer-kubeconfig/--peer-context (the
// kubeconfig defaulting to --kubeconfig) and named in the report.
func TestMulticlusterMode(t *testing.T) {
	var built []string
	base := fakeEnv("v1.36.3", "36", true)
	build := func(kubeconfig, context string) (*check.Env, error) {
		built = append(built, kubeconfig+"|"+context)
		return base(kubeconfig, context)
	}
	out, err := execute(t, build, "--multicluster", "--kubeconfig", "/k/east", "--context", "east", "--peer-context", "west", "-o", "json")
	if !errors.Is(err, ErrChecksFailed) { // neither fake cluster has Trellis
		t.Fatalf("err = %v\n%s", err, out)
	}
	if got, want := strings.Join(built, ","), "/k/east|east,/k/east|west"; got != want {
		t.Errorf("envs built for %s, want %s", got, want)
	}
	var rep check.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	// Without link Secrets or a gateway, the links and gateway checks add
	// no result: the four trust checks remain.
	if want := len(check.MulticlusterChecks()) - 2; len(rep.Checks) != want {
		t.Fatalf("%d checks, want the %d multicluster trust checks", len(rep.Checks), want)
	}
	if c := rep.Checks[0]; c.Status != check.Fail || !strings.Contains(c.Message, "peer west:") {
		t.Errorf("first check %+v: want a failure naming the peer", c)
	}
}

// TestWait: with --wait a failing round is run again, and the result is
// the round that passed; without it the first failure is final.
func TestWait(t *testing.T) {
	// The first SSAR is denied, every later one allowed: the first round
	// fails the permissions check, the next passes.
	flaky := func(string, string) (*check.Env, error) {
		env, err := fakeEnv("v1.36.3", "36", true)("", "")
		if err != nil {
			return nil, err
		}
		cs := env.Kube.(*fake.Clientset)
		deniedOnce := false
		cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
			r := a.(k8stesting.CreateAction).GetObject().(*authv1.SelfSubjectAccessReview).DeepCopy()
			r.Status.Allowed = deniedOnce
			deniedOnce = true
			return true, r, nil
		})
		return env, nil
	}
	if out, err := execute(t, flaky, "--pre"); !errors.Is(err, ErrChecksFailed) {
		t.Fatalf("without --wait: err = %v, want a failure\n%s", err, out)
	}
	out, err := execute(t, flaky, "--pre", "--wait", "30s")
	if err != nil {
		t.Fatalf("with --wait: err = %v\n%s", err, out)
	}
	if !strings.Contains(out, "✔ all") {
		t.Fatalf("with --wait: output lacks the passing round:\n%s", out)
	}
	if _, err := execute(t, flaky, "--pre", "--wait", "-1s"); err == nil || !strings.Contains(err.Error(), "must not be negative") {
		t.Fatalf("negative --wait: err = %v", err)
	}
}
