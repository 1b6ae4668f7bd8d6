//go:build !linux

package redirect

import (
	"context"
	"errors"
)

// InNetns is only supported on linux.
type InNetns struct {
	Path string
}

// Run implements Runner.
func (InNetns) Run(context.Context, string, string, ...string) ([]byte, error) {
	return nil, errors.New("network namespaces are only supported on linux")
}
