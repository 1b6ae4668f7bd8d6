package routes

import (
	"testing"

	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
)

func TestMain(m *testing.M) { apiservertest.Main(m) }
