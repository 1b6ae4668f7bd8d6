package serve

import (
	"os"
	"testing"

	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	apiservertest.Stop() // the API server the cluster tests may have started
	os.Exit(code)
}

// clusterKubeconfig returns the kubeconfig of a real API server, or skips.
func clusterKubeconfig(t *testing.T) string { return apiservertest.Kubeconfig(t) }
