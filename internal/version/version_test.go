package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	s := String()
	if !strings.HasPrefix(s, Version+" ") {
		t.Errorf("String() = %q, want prefix %q", s, Version+" ")
	}
	if !strings.Contains(s, runtime.Version()) {
		t.Errorf("String() = %q, want the Go version %q in it", s, runtime.Version())
	}
}
