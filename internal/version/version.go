// Package version holds the build version of the Trellis binaries.
package version

import (
	"fmt"
	"runtime"
)

// Version is set at build time with
// -ldflags "-X github.com/trellis-mesh/trellis/internal/version.Version=v1.2.3".
// It must stay a plain string variable for -X to work.
var Version = "dev"

// String returns the version with the Go toolchain and platform, as printed
// by `trellis version`.
func String() string {
	return fmt.Sprintf("%s (%s, %s/%s)", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
