package apiservertest

import (
	"os"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Must fails the test on a call's error: Must(t)(client.Create(...)).
func Must(t testing.TB) func(any, error) {
	return func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// RESTConfig is the client configuration of Kubeconfig's API server (or
// the test skips).
func RESTConfig(t testing.TB) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", Kubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Main runs a package's tests, then stops the API server Kubeconfig may
// have started: func TestMain(m *testing.M) { apiservertest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}
