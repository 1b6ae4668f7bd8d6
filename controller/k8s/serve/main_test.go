package serve

import (
	"testing"

	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
)

func TestMain(m *testing.M) { apiservertest.Main(m) }

// clusterKubeconfig returns the kubeconfig of a real API server, or skips.
func clusterKubeconfig(t *testing.T) string { return apiservertest.Kubeconfig(t) }
