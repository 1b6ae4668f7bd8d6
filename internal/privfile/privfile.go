// Package privfile reads files the CLI finds in a shared place (the
// temporary directory: a `trellis demo`'s work directory) only when they
// and their directory are the user's own and private. Anything another
// local user could have written there (a directory of theirs or one they
// may write in, a symbolic link, a file that points outside the
// directory) is refused with an error naming the path and the fix: such a
// file could name the attacker's listener and one of the user's secrets
// to send it.
package privfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// getuid is os.Getuid; tests replace it to see a file of another user.
var getuid = os.Getuid

// maxRead bounds what Read reads: these are small files (tokens, a store),
// and an endless one must not hang the CLI.
const maxRead = 4 << 20

// What OpenDir accepts of group and other.
type Access int

const (
	// Private: no access at all (mode 0700, what os.MkdirTemp creates):
	// for a directory the CLI finds by itself.
	Private Access = iota
	// ReadOnly: reading and listing, never writing (0755 is fine): for a
	// directory the user named.
	ReadOnly
)

// OpenDir opens dir after checking it is the user's own directory: not a
// symbolic link, a directory owned by the user, and none of group and
// other's access beyond what access allows. Only the user (and root) can
// then have put files in it. The caller closes the Root.
func OpenDir(dir string, access Access) (*os.Root, error) {
	lst, err := os.Lstat(dir)
	if err != nil {
		return nil, err
	}
	if lst.Mode()&os.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s: a symbolic link, refused (another user could point it anywhere): give the directory itself", dir)
	}
	if !lst.IsDir() {
		return nil, fmt.Errorf("%s: not a directory", dir)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	// Check what was opened, not only the name: the same directory.
	st, err := root.Stat(".")
	if err == nil && !os.SameFile(lst, st) {
		err = fmt.Errorf("%s: replaced while being opened", dir)
	}
	if err == nil {
		if access == ReadOnly {
			err = checkOwn(dir, st, 0o022, "go-w")
		} else {
			err = checkOwn(dir, st, 0o077, "700")
		}
	}
	if err != nil {
		root.Close()
		return nil, err
	}
	return root, nil
}

// Read reads name, a path inside root (see Within), which must be a
// regular file (not a symbolic link) owned by the user with no access for
// group or other (0600).
func Read(root *os.Root, name string) ([]byte, error) {
	full := filepath.Join(root.Name(), name)
	lst, err := root.Lstat(name)
	if err != nil {
		return nil, fullPath(err, full)
	}
	if !lst.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s), refused", full, lst.Mode().Type())
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, fullPath(err, full)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !os.SameFile(lst, st) {
		return nil, fmt.Errorf("%s: replaced while being opened", full)
	}
	if err := checkOwn(full, st, 0o077, "600"); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRead+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", full, err)
	}
	if len(b) > maxRead {
		return nil, fmt.Errorf("%s: larger than %d bytes", full, maxRead)
	}
	return b, nil
}

// Within is path relative to dir when it lies inside dir (path may be
// relative to dir, or absolute); an error naming both otherwise.
func Within(dir, path string) (string, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	adir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if rel, err := filepath.Rel(adir, path); err == nil && inside(rel) {
		return rel, nil
	}
	// The same place reached through a symbolic link of a parent (macOS's
	// /var is /private/var): compare the resolved directories.
	rdir, err1 := filepath.EvalSymlinks(adir)
	rparent, err2 := filepath.EvalSymlinks(filepath.Dir(path))
	if err1 == nil && err2 == nil {
		if rel, err := filepath.Rel(rdir, filepath.Join(rparent, filepath.Base(path))); err == nil && inside(rel) {
			return rel, nil
		}
	}
	return "", fmt.Errorf("%s is outside %s, refused (only a file of that directory is trusted)", path, dir)
}

// fullPath names the whole path in a Root's error, which names only the
// part inside the root.
func fullPath(err error, full string) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		pe.Path = full
	}
	return err
}

// inside: rel names something under the directory, not the directory.
func inside(rel string) bool { return rel != "." && filepath.IsLocal(rel) }

// checkOwn refuses st unless the user owns it and mode has none of the
// bits of deny; fix is the chmod mode to suggest.
func checkOwn(path string, st os.FileInfo, deny os.FileMode, fix string) error {
	uid, ok := owner(st)
	if !ok {
		return fmt.Errorf("%s: cannot tell who owns it on this system, refused", path)
	}
	if me := getuid(); uid != me {
		return fmt.Errorf("%s: owned by uid %d, not by you (uid %d), refused", path, uid, me)
	}
	if perm := st.Mode().Perm(); perm&deny != 0 {
		return fmt.Errorf("%s: mode %04o gives other users access, refused (chmod %s %s)", path, perm, fix, path)
	}
	return nil
}
