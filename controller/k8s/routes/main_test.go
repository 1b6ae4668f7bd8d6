package routes

import (
	"os"
	"testing"

	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	apiservertest.Stop()
	os.Exit(code)
}
