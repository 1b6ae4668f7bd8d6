//go:build unix

package privfile

import (
	"os"
	"syscall"
)

// owner is the uid owning st's file.
func owner(st os.FileInfo) (int, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(sys.Uid), true
}
