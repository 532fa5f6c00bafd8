package vhost

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// SocketPerm is who may connect to a vhost-user socket: the owner, group
// and mode its file has before anyone can connect to it. The zero value
// leaves the file as the process creates it (its uid, gid and umask).
type SocketPerm struct {
	// Mode is the file's permission bits, at most 0777; 0 leaves the
	// ones the umask gives.
	Mode os.FileMode
	// UID owns the file when SetUID is set, GID when SetGID is.
	UID, GID       int
	SetUID, SetGID bool
}

// maxSunPath is the longest socket path bind(2) and connect(2) take:
// sun_path is 108 bytes, one of them for the NUL.
const maxSunPath = 107

// socketFile is the file of a listening socket as Listen made it, so that
// Close removes the path only while it is still that file: a socket a
// newer process put there after ours is left alone.
type socketFile struct {
	path     string
	dev, ino uint64
}

// listenUnix creates a listening unix socket at path that nobody can
// connect to before it has the owner, group and mode of perm: the socket
// is bound inside a fresh directory only we can enter (mode 0700, next to
// path, so on the same file system), given its owner and mode there, and
// only then moved to path, in one rename that fails rather than replace
// anything that appeared there meanwhile. Until the rename, path does not
// exist; after it, the socket has its final permissions.
//
// The caller removes a stale socket at path first (removeStale). The
// listener does not unlink its path on Close; socketFile.remove does.
func listenUnix(path string, perm SocketPerm) (*net.UnixListener, *socketFile, error) {
	if perm.Mode&^os.ModePerm != 0 {
		return nil, nil, fmt.Errorf("socket %s: mode %#o has bits beyond 0777", path, perm.Mode)
	}
	if len(path) > maxSunPath {
		return nil, nil, fmt.Errorf("socket %s: path is %d bytes, longer than a unix socket address takes (%d); choose a shorter one", path, len(path), maxSunPath)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".vhostd-")
	if err != nil {
		return nil, nil, fmt.Errorf("socket %s: make a private directory to create it in: %w", path, err)
	}
	defer os.RemoveAll(tmp) // empty after the rename; holds the socket on error
	sock := filepath.Join(tmp, "s")
	bind := sock
	if len(bind) > maxSunPath {
		// The directory name made the path too long for bind(2): bind
		// through the directory's fd instead, which names it briefly.
		d, err := os.Open(tmp)
		if err != nil {
			return nil, nil, fmt.Errorf("socket %s: %w", path, err)
		}
		defer d.Close()
		bind = fmt.Sprintf("/proc/self/fd/%d/s", d.Fd())
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bind, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // the bind path is gone after the rename
	fail := func(what string, err error) (*net.UnixListener, *socketFile, error) {
		ln.Close()
		return nil, nil, fmt.Errorf("socket %s: %s: %w", path, what, err)
	}
	if perm.SetUID || perm.SetGID {
		uid, gid := -1, -1
		if perm.SetUID {
			uid = perm.UID
		}
		if perm.SetGID {
			gid = perm.GID
		}
		if err := os.Lchown(sock, uid, gid); err != nil {
			return fail(fmt.Sprintf("set owner %d and group %d (-1: unchanged)", uid, gid), err)
		}
	}
	if perm.Mode != 0 {
		if err := os.Chmod(sock, perm.Mode); err != nil {
			return fail(fmt.Sprintf("set mode %#o", perm.Mode), err)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(sock, &st); err != nil {
		return fail("stat", err)
	}
	if err := renameNoReplace(sock, path); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fail("move into place", fmt.Errorf("another file appeared at the path meanwhile: %w", err))
		}
		return fail("move into place", err)
	}
	return ln, &socketFile{path: path, dev: st.Dev, ino: st.Ino}, nil
}

// ListenUnix creates a listening unix socket at path that nobody can
// connect to before it has the owner, group and mode of perm (the same
// way the vhost-user sockets are made: see listenUnix). remove unlinks
// path if it is still that socket; closing the listener does not.
func ListenUnix(path string, perm SocketPerm) (ln *net.UnixListener, remove func() error, err error) {
	ln, f, err := listenUnix(path, perm)
	if err != nil {
		return nil, nil, err
	}
	return ln, f.remove, nil
}

// renameNoReplace moves from to to, failing with EEXIST if to exists. A
// file system without RENAME_NOREPLACE gets link and unlink, which fail
// the same way.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if err != unix.EINVAL && err != unix.ENOSYS {
		return err
	}
	if err := unix.Link(from, to); err != nil {
		return err
	}
	return unix.Unlink(from)
}

// remove unlinks the socket's path if it is still the file listenUnix
// made. (Between the check and the unlink another process could replace
// it; only one that can write the socket's directory, which is trusted.)
func (f *socketFile) remove() error {
	if f == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Lstat(f.path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("socket %s: %w", f.path, err)
	}
	if st.Dev != f.dev || st.Ino != f.ino {
		return nil // not ours any more
	}
	if err := unix.Unlink(f.path); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove socket %s: %w", f.path, err)
	}
	return nil
}
