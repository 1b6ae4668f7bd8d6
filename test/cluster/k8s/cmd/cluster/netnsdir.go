package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// netnsDir is where containerd's CNI network namespaces are bind-mounted
// (/var/run/netns; /var/run is /run on Debian).
const netnsDir = "/run/netns"

// shareNetnsDir makes netnsDir a shared mount of its own before containerd
// starts, exactly as `ip netns add` does the first time it runs. Without
// it, an `ip netns add` on the host while pods run (test/netns does, in
// make test beside make e2e) bind-mounts the directory over itself, hiding
// the pods' netns mounts beneath: containerd can then never remove a
// pod's netns ("remove netns: device or resource busy"), the pod stays
// Terminating and so does its namespace. It reports whether it mounted.
func shareNetnsDir() (bool, error) {
	if slices.Contains(mountsUnder(netnsDir), netnsDir) {
		return false, nil // already a mount point (ip netns ran before)
	}
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return false, err
	}
	if err := syscall.Mount(netnsDir, netnsDir, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return false, fmt.Errorf("bind-mount %s on itself: %w", netnsDir, err)
	}
	if err := syscall.Mount("", netnsDir, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		_ = syscall.Unmount(netnsDir, syscall.MNT_DETACH)
		return false, fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	return true, nil
}

// unshareNetnsDir undoes shareNetnsDir (down, once the pods' namespaces
// are gone), unless something else still has a netns there.
func unshareNetnsDir() error {
	ents, _ := os.ReadDir(netnsDir)
	for _, e := range ents {
		if slices.Contains(mountsUnder(filepath.Join(netnsDir, e.Name())), filepath.Join(netnsDir, e.Name())) {
			return nil // someone's netns: leave the directory mounted
		}
	}
	if err := syscall.Unmount(netnsDir, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount %s: %w", netnsDir, err)
	}
	return nil
}
